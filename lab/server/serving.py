"""Run one admitted generation and answer it: a JSON body, or an SSE stream of chunks.

Contract of `serve_generation(request, ctx, builder, gen, stream, include_usage)`:
- Admission (`Lifecycle.admit`, one engine request per choice) happens first: 503 while loading,
  draining, or while the engine does not answer.
- The first delta of every choice is awaited before any byte is sent, so a request the backend
  refuses is a plain 400 even when streaming (and a gateway may retry a replica that fails before
  the first byte). Streamed headers therefore leave with the first tokens.
- Errors: a refusal is 400; a request the engine failed on alone (`RequestFailed`) is 422
  `request_failed` (its own input broke it: retrying elsewhere would fail the same way); any other
  engine failure is 500 `engine_error`. Once streaming they come in-band, as one error event in
  OpenAI's shape, then `[DONE]`.
- A request the server aborted (drain timeout) is never a normal finish: its chunk says
  finish_reason "abort" (vLLM's value), then an error event (503 `request_aborted`) ends the
  stream; a non-streamed one is a 503 `request_aborted`.
- A client that disconnects aborts its request, which frees its KV blocks: while we wait (the
  first deltas, or a whole non-streamed answer) `request.is_disconnected()` is polled every
  `DISCONNECT_POLL_S`; once streaming, Starlette cancels the body generator on disconnect.
  Either way the backend streams are cancelled and `backend.abort` runs in a `finally`.
- Every admitted choice is released from the lifecycle and closed in the metrics exactly once,
  whichever way it ends (finished, refused, failed, client gone, drain abort).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from lab.server.backend import BackendError, Delta, RequestFailed, RequestRefused, ServingBackend
from lab.server.choices import ChoiceStreams
from lab.server.errors import APIError, error_body
from lab.server.lifecycle import Lifecycle, State
from lab.server.logprobs import TokenTexts, chat_logprobs, completion_logprobs
from lab.server.metrics import RequestRecorder, ServerMetrics
from lab.server.responses import SSE_DONE, ChoiceResult, ResponseBuilder, Usage, sse
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


@dataclass
class _Choice:
    """What one choice has produced so far."""

    index: int
    recorder: RequestRecorder
    parts: list[str] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # TokenLogprob, in token order
    text_offset: int = 0  # completions' logprobs: where the next token's text starts
    last: Delta | None = None


async def serve_generation(request: Request, ctx: ServingContext, builder: ResponseBuilder,
                           gen: GenerationInput, stream: bool, include_usage: bool) -> Response:
    backend = ctx.lifecycle.require_backend()
    streams = ChoiceStreams(backend, gen, builder.request_id)
    for engine_id in streams.engine_ids.values():
        ctx.lifecycle.admit(engine_id)
    choices = {c.index: _Choice(c.index, ctx.metrics.start_request(len(c.prompt_token_ids))) for c in gen.choices}
    answer = _Answer(builder, gen, choices, TokenTexts(backend.tokenizer, gen.tokens_as_ids))
    handed_to_stream = False
    try:
        streams.start()
        firsts = await _until_disconnect(request, streams.first_deltas())
        for index, delta in firsts.items():
            answer.take(index, delta)
        if stream:
            body = _sse_body(firsts, streams, answer, ctx, backend, include_usage)
            handed_to_stream = True
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": builder.request_id})
        await _until_disconnect(request, _collect(streams, answer))
        if answer.aborted:
            raise _aborted(ctx.lifecycle)
        return JSONResponse(answer.full(), headers={"X-Request-Id": builder.request_id})
    except RequestRefused as exc:
        for choice in choices.values():
            choice.recorder.discard()
        raise APIError(400, str(exc), param=exc.param, code="invalid_value") from None
    except BackendError as exc:
        raise _backend_error(builder.request_id, exc) from None
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        if not handed_to_stream:  # the stream's own finally does this once it ends
            _end(ctx, backend, streams, choices)


class _Answer:
    """The choices of one answer as they grow, and their OpenAI shapes."""

    def __init__(self, builder: ResponseBuilder, gen: GenerationInput, choices: dict[int, _Choice],
                 texts: TokenTexts) -> None:
        self.builder, self.gen, self.choices, self.texts = builder, gen, choices, texts

    def take(self, index: int, delta: Delta) -> None:
        """Record one delta of choice `index`."""
        choice = self.choices[index]
        choice.recorder.on_delta(delta)
        choice.parts.append(delta.text)
        choice.logprobs.extend(delta.logprobs)
        choice.last = delta

    def chunk(self, index: int, delta: Delta, *, first: bool, include_usage: bool) -> str:
        """The SSE chunk of one delta of choice `index` (already taken)."""
        logprobs = self._logprobs(self.choices[index], delta.logprobs) if self.gen.logprobs else None
        return self.builder.chunk(delta.text, delta.finish_reason, index=index, first=first,
                                  include_usage=include_usage, logprobs=logprobs)

    def _logprobs(self, choice: _Choice, logprobs) -> dict[str, Any]:
        if self.builder.shape.chat:
            return chat_logprobs(logprobs, self.texts)
        body, choice.text_offset = completion_logprobs(logprobs, self.texts, choice.text_offset)
        return body

    @property
    def aborted(self) -> bool:
        return any(c.last is not None and c.last.finish_reason == "abort" for c in self.choices.values())

    def usage(self) -> Usage:
        return Usage(self.gen.num_prompt_tokens, sum(c.last.num_output_tokens for c in self.choices.values() if c.last))

    def full(self) -> dict[str, Any]:
        results = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            logprobs = self._logprobs(choice, choice.logprobs) if self.gen.logprobs else None
            results.append(ChoiceResult(index, "".join(choice.parts), choice.last.finish_reason, logprobs))
        return self.builder.full(results, self.usage())


def _end(ctx: ServingContext, backend: ServingBackend, streams: ChoiceStreams, choices: dict[int, _Choice]) -> None:
    streams.close()
    for index, engine_id in streams.engine_ids.items():
        backend.abort(engine_id)  # a no-op when it finished; frees its KV when it did not
        choices[index].recorder.close("abort")  # a no-op when it finished
        ctx.lifecycle.release(engine_id)


def _backend_error(request_id: str, exc: BackendError) -> APIError:
    if isinstance(exc, RequestFailed):
        logger.warning("request %s failed alone in the engine: %s", request_id, exc)
        return APIError(422, f"the engine could not run this request (the rest of its batch went on): {exc}",
                        code="request_failed")
    logger.error("request %s failed in the backend: %s", request_id, exc)
    return APIError(500, f"the engine failed while running this request: {exc}", code="engine_error")


def _aborted(lifecycle: Lifecycle) -> APIError:
    why = "the server is shutting down and its drain timeout ran out" if lifecycle.state is State.DRAINING \
        else "the server aborted it"
    return APIError(503, f"the request was aborted before it finished: {why}", code="request_aborted")


async def _collect(streams: ChoiceStreams, answer: _Answer) -> None:
    async for index, delta in streams.rest():
        answer.take(index, delta)


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
            task.cancel()  # cancels the backend streams, whose finally aborts the requests


async def _sse_body(firsts: dict[int, Delta], streams: ChoiceStreams, answer: _Answer, ctx: ServingContext,
                    backend: ServingBackend, include_usage: bool) -> AsyncIterator[str]:
    # No awaits in `finally`: on a disconnect this generator is cancelled (or closed at a yield).
    builder = answer.builder
    try:
        for index in sorted(firsts):
            yield answer.chunk(index, firsts[index], first=True, include_usage=include_usage)
        async for index, delta in streams.rest():
            answer.take(index, delta)
            if delta.text or delta.finished or delta.logprobs:
                yield answer.chunk(index, delta, first=False, include_usage=include_usage)
        if include_usage:
            yield builder.usage_chunk(answer.usage())
        if answer.aborted:  # never let a cut stream pass for a finished one
            yield sse(_aborted(ctx.lifecycle).body())
        yield SSE_DONE
    except BackendError as exc:
        # Headers are gone: report in-band, as vLLM does, then end the stream.
        yield sse(_backend_error(builder.request_id, exc).body())
        yield SSE_DONE
    finally:
        _end(ctx, backend, streams, answer.choices)
