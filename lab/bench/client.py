"""One streamed request to an OpenAI-compatible `/v1/completions` endpoint, timed as vLLM does.

Contract: `send_completion(http, url, planned, model, ...)` posts `{"model", "prompt" (text or
token ids), "max_tokens", "stream": true, "stream_options": {"include_usage": true},
"ignore_eos", "temperature": 0}` with the tier's key as `Authorization: Bearer`, reads the
server-sent events and returns a `RequestResult`; it never raises for a failed request (it
records why), only for cancellation. Timings use `time.perf_counter()` from just before the POST:
- TTFT: the arrival of the first chunk whose choice carries non-empty text (if no chunk has
  text, e.g. a random-weight model emitting partial UTF-8 characters, the first chunk with a choice);
- ITL: the gap between consecutive non-empty chunks after that (a chunk may hold several tokens
  when the server or the network batches them; vLLM counts it as one gap too);
- E2E: until the stream ends (`data: [DONE]` or the connection closes);
- output tokens: `usage.completion_tokens` from the final usage chunk when sent, else the number
  of chunks that carried a choice.
A request fails with an `error_kind`: `http_<status>` (non-200 answer), `timeout`, `connect`,
`stream_error` (an error event in the stream), `empty_stream` (no choice at all) or the
exception's class name; `cancelled` marks a request stopped by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from lab.bench.workloads import PlannedRequest

ERROR_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class RequestResult:
    index: int
    tier: str
    input_tokens: int  # planned prompt length
    max_tokens: int  # planned output length
    scheduled_s: float  # planned arrival, from the start of the run
    sent_s: float  # when the POST went out (later than scheduled under a concurrency cap)
    success: bool
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: tuple[float, ...] = ()
    output_tokens: int = 0
    output_tokens_from_usage: bool = False
    prompt_tokens_reported: int | None = None  # usage.prompt_tokens, when the server sent usage
    finish_reason: str | None = None
    http_status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None


def request_body(planned: PlannedRequest, model: str, ignore_eos: bool) -> dict:
    body = {
        "model": model,
        "prompt": planned.prompt.payload(),
        "max_tokens": planned.output_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's extension; OpenAI's own API rejects unknown fields
    return body


async def send_completion(http: httpx.AsyncClient, url: str, planned: PlannedRequest, model: str, *,
                          run_start: float, ignore_eos: bool = True) -> RequestResult:
    headers = {"Authorization": f"Bearer {planned.tier.api_key}"} if planned.tier.api_key else {}
    common = dict(index=planned.index, tier=planned.tier.name, input_tokens=planned.input_tokens,
                  max_tokens=planned.output_tokens, scheduled_s=planned.arrival_s)
    content_times: list[float] = []
    choice_chunks = 0
    usage: dict | None = None
    first_choice_time: float | None = None
    finish_reason = None
    status = None
    start = time.perf_counter()
    common["sent_s"] = start - run_start

    def failed(kind: str, message: str) -> RequestResult:
        return RequestResult(**common, success=False, http_status=status, error_kind=kind,
                             error_message=message[:ERROR_MESSAGE_CHARS], output_tokens=choice_chunks)

    try:
        async with http.stream("POST", url, json=request_body(planned, model, ignore_eos), headers=headers) as response:
            status = response.status_code
            if status != 200:
                body = (await response.aread()).decode("utf-8", errors="replace")
                return failed(f"http_{status}", body)
            async for line in response.aiter_lines():
                now = time.perf_counter()
                if not line.startswith("data:"):
                    continue  # blank separators, comments, `event:` lines
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return failed("stream_error", json.dumps(chunk["error"]))
                if chunk.get("usage"):
                    usage = chunk["usage"]
                choices = chunk.get("choices") or []
                if choices:
                    choice_chunks += 1
                    first_choice_time = first_choice_time or now
                    if choices[0].get("text"):
                        content_times.append(now)
                    finish_reason = choices[0].get("finish_reason") or finish_reason
        end = time.perf_counter()
    except asyncio.CancelledError:
        raise
    except httpx.TimeoutException as error:
        return failed("timeout", f"{type(error).__name__}: {error}")
    except httpx.ConnectError as error:
        return failed("connect", str(error))
    except Exception as error:  # noqa: BLE001 - any failure is a measured outcome, not a crash
        return failed(type(error).__name__, str(error))

    if choice_chunks == 0:
        return failed("empty_stream", "the stream ended without any choice")
    completion_tokens = (usage or {}).get("completion_tokens")
    # A stream whose tokens all decoded to no text (partial UTF-8 characters of a tiny random
    # model) still had a first token: its first choice chunk.
    first = content_times[0] if content_times else first_choice_time
    return RequestResult(
        **common,
        success=True,
        ttft_s=first - start,
        e2e_s=end - start,
        itl_s=tuple(b - a for a, b in zip(content_times, content_times[1:])),
        output_tokens=int(completion_tokens) if completion_tokens is not None else choice_chunks,
        output_tokens_from_usage=completion_tokens is not None,
        prompt_tokens_reported=(usage or {}).get("prompt_tokens"),
        finish_reason=finish_reason,
        http_status=status,
    )


def cancelled_result(planned: PlannedRequest, sent_s: float | None) -> RequestResult:
    """The row of a request that Ctrl-C stopped (or that never started)."""
    return RequestResult(index=planned.index, tier=planned.tier.name, input_tokens=planned.input_tokens,
                         max_tokens=planned.output_tokens, scheduled_s=planned.arrival_s,
                         sent_s=float("nan") if sent_s is None else sent_s, success=False,
                         error_kind="cancelled", error_message="stopped by the user")
