"""Run one admitted generation and answer it: a JSON body, or an SSE stream of chunks.

Contract of `serve_generation(request, ctx, builder, gen, stream, include_usage)`:
- Admission (`Lifecycle.admit`) happens first: 503 while loading or draining.
- The first delta is awaited before any byte is sent, so a request the backend refuses is a
  plain 400 even when streaming (and a gateway may retry a replica that fails before the first
  byte). Streamed headers therefore leave with the first token.
- A client that disconnects aborts its request, which frees its KV blocks: while we wait (the
  first delta, or a whole non-streamed answer) `request.is_disconnected()` is polled every
  `DISCONNECT_POLL_S`; once streaming, Starlette cancels the body generator on disconnect.
  Either way the backend stream is cancelled and `backend.abort` runs in a `finally`.
- Every admitted request is released from the lifecycle and closed in the metrics exactly once,
  whichever way it ends (finished, refused, failed, client gone, drain abort).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from lab.server.backend import BackendError, Delta, RequestRefused, ServingBackend
from lab.server.errors import APIError, error_body
from lab.server.lifecycle import Lifecycle
from lab.server.metrics import RequestRecorder, ServerMetrics
from lab.server.responses import SSE_DONE, ResponseBuilder, Usage, sse
from lab.server.sampling import GenerationInput

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.2  # how soon a vanished client's request is aborted while we wait
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody reads it
T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


@dataclass(frozen=True)
class ServingContext:
    lifecycle: Lifecycle
    metrics: ServerMetrics


async def serve_generation(request: Request, ctx: ServingContext, builder: ResponseBuilder,
                           gen: GenerationInput, stream: bool, include_usage: bool) -> Response:
    backend = ctx.lifecycle.require_backend()
    request_id = builder.request_id
    ctx.lifecycle.admit(request_id)
    recorder = ctx.metrics.start_request(len(gen.prompt_token_ids))
    deltas = backend.generate(gen.prompt_token_ids, gen.params, request_id, gen.priority)
    handed_to_stream = False
    try:
        first = await _until_disconnect(request, _first(deltas))
        recorder.on_delta(first)
        usage_of = _UsageOf(len(gen.prompt_token_ids))
        if stream:
            body = _sse_body(first, deltas, builder, recorder, ctx, backend, usage_of, include_usage)
            handed_to_stream = True
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
        text, last = await _until_disconnect(request, _collect(first, deltas, recorder))
        return JSONResponse(builder.full(text, last.finish_reason, usage_of(last)),
                            headers={"X-Request-Id": request_id})
    except RequestRefused as exc:
        recorder.discard()
        raise APIError(400, str(exc), code="invalid_value") from None
    except BackendError as exc:
        logger.error("request %s failed in the backend: %s", request_id, exc)
        raise APIError(500, f"the engine failed while running this request: {exc}", code="engine_error") from None
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        if not handed_to_stream:  # the stream's own finally does this once it ends
            _end(ctx, backend, recorder, request_id)


def _end(ctx: ServingContext, backend: ServingBackend, recorder: RequestRecorder, request_id: str) -> None:
    backend.abort(request_id)  # a no-op when it finished; frees its KV when it did not
    recorder.close("abort")  # a no-op when it finished
    ctx.lifecycle.release(request_id)


@dataclass(frozen=True)
class _UsageOf:
    num_prompt_tokens: int

    def __call__(self, last: Delta) -> Usage:
        return Usage(self.num_prompt_tokens, last.num_output_tokens)


async def _first(deltas: AsyncIterator[Delta]) -> Delta:
    try:
        return await anext(deltas)
    except StopAsyncIteration:
        raise BackendError("the backend ended the request without any output") from None


async def _collect(first: Delta, deltas: AsyncIterator[Delta], recorder: RequestRecorder) -> tuple[str, Delta]:
    parts, last = [first.text], first
    while not last.finished:
        last = await _first(deltas)
        recorder.on_delta(last)
        parts.append(last.text)
    return "".join(parts), last


async def _until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`; if the client disconnects first, cancel it and raise ClientDisconnected."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()  # cancels the backend stream, whose finally aborts the request


async def _sse_body(first: Delta, deltas: AsyncIterator[Delta], builder: ResponseBuilder,
                    recorder: RequestRecorder, ctx: ServingContext, backend: ServingBackend,
                    usage_of: _UsageOf, include_usage: bool) -> AsyncIterator[str]:
    # No awaits in `finally`: on a disconnect this generator is cancelled (or closed at a yield).
    try:
        yield builder.chunk(first.text, first.finish_reason, first=True, include_usage=include_usage)
        last = first
        while not last.finished:
            last = await _first(deltas)
            recorder.on_delta(last)
            if last.text or last.finished:
                yield builder.chunk(last.text, last.finish_reason, include_usage=include_usage)
        if include_usage:
            yield builder.usage_chunk(usage_of(last))
        yield SSE_DONE
    except BackendError as exc:
        # Headers are gone: report in-band, as vLLM does, then end the stream.
        logger.error("request %s failed in the backend: %s", builder.request_id, exc)
        yield sse(error_body(500, f"the engine failed while running this request: {exc}", code="engine_error"))
        yield SSE_DONE
    finally:
        _end(ctx, backend, recorder, builder.request_id)
