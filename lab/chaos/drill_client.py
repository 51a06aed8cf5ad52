"""One drill request and how it ended, from the client's side: the unit of client-side truth.

Contract: `send_drill_request(http, url, body, tier, api_key, index, timeout_s)` posts one completion
(streamed or not) and returns a `DrillRequest` row; it never raises for a failed request. Times are
`time.monotonic()` (system-wide on Linux, so they line up with fault records): `sent_at_s` before the
POST, `first_byte_at_s` at the first body byte, `first_token_at_s` at the first SSE chunk carrying a
choice (a non-streamed reply: its whole body), `ended_at_s` when the exchange ended. Outcomes:
- `success`: a 200 whose stream ended with `data: [DONE]` or a `finish_reason` (or a JSON body with
  choices);
- `error`: an explicit error: a non-200 status (`error_type` "http_<status>:<OpenAI code or type>"),
  an SSE error event ("sse:<code or type>"), or a JSON body with `error`;
- `timeout`: the client's own deadline (`timeout_s`, whole exchange) or one of httpx's timeouts;
- `connection_error`: the transport failed before any response (refused, reset, closed early);
- `cut`: a 200 whose stream the transport broke before its end marker (reset, or closed inside a chunk): the
  client knows the answer failed, but no process of the service said why. While the gateway lives it owes an
  SSE error instead, so a drill whose fault spares the gateway fails on a cut; when the fault kills the gateway
  itself, the streams it carried can only be cut, and the drill counts them;
- `lost`: a 200 that ended with neither an answer nor an error: a stream closed cleanly before its end
  marker, or one that ended without any choice: a client could take it for a whole answer. A lost request
  fails every drill.
`error_type` also names the exception for timeouts, connection errors and lost streams.
Why not `lab.bench.client.send_completion`: a benchmark counts a stream cut after some tokens as a
success and records times relative to its run; a drill must tell a cut stream apart and line times up
with faults. The request body is the bench's shape (`completion_body`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

import httpx

OUTCOMES = ("success", "error", "timeout", "connection_error", "cut", "lost")
DETAIL_CHARS = 300
ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class DrillRequest:
    index: int
    tier: str
    sent_at_s: float
    ended_at_s: float
    outcome: str  # one of OUTCOMES
    first_byte_at_s: float | None = None
    first_token_at_s: float | None = None
    http_status: int | None = None
    error_type: str | None = None
    detail: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at_s is None else self.first_token_at_s - self.sent_at_s

    def as_dict(self) -> dict:
        return {**asdict(self), "ttft_s": self.ttft_s}


def completion_body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _error_name(payload: object) -> str:
    """OpenAI's `error.code`, else `error.type`, else "unknown"."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "unknown")
    return "unknown"


class _Progress:
    """What the exchange saw so far; kept when the deadline cancels it halfway."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.first_byte: float | None = None
        self.first_token: float | None = None
        self.choices = 0
        self.finished = False  # [DONE] or a finish_reason seen


async def _exchange(http: httpx.AsyncClient, url: str, body: dict, headers: dict,
                    p: _Progress) -> tuple[str, str | None, str | None]:
    """(outcome, error_type, detail) of one exchange; transport exceptions propagate."""
    async with http.stream("POST", url, json=body, headers=headers) as response:
        p.status = response.status_code
        is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
        if p.status != 200 or not is_sse:
            raw = b""
            async for chunk in response.aiter_bytes():
                p.first_byte = p.first_byte or time.monotonic()
                raw += chunk
                if len(raw) > ERROR_BODY_BYTES:
                    break
            text = raw.decode("utf-8", errors="replace")
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            if p.status != 200:
                return "error", f"http_{p.status}:{_error_name(payload)}", text[:DETAIL_CHARS]
            if isinstance(payload, dict) and payload.get("choices"):
                p.first_token = p.first_byte
                return "success", None, None
            if isinstance(payload, dict) and "error" in payload:
                return "error", f"json:{_error_name(payload)}", text[:DETAIL_CHARS]
            return "lost", "no_choices", text[:DETAIL_CHARS]
        async for line in response.aiter_lines():
            p.first_byte = p.first_byte or time.monotonic()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                p.finished = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                return "error", f"sse:{_error_name(chunk)}", data[:DETAIL_CHARS]
            choices = chunk.get("choices") or []
            if choices:
                p.choices += 1
                p.first_token = p.first_token or time.monotonic()
                p.finished = p.finished or bool(choices[0].get("finish_reason"))
    if p.choices and p.finished:
        return "success", None, None
    return "lost", "stream_ended_early" if p.choices else "empty_stream", None


async def send_drill_request(http: httpx.AsyncClient, url: str, body: dict, *, tier: str, api_key: str | None,
                             index: int, timeout_s: float) -> DrillRequest:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    progress = _Progress()
    sent = time.monotonic()

    def row(outcome: str, error_type: str | None = None, detail: str | None = None) -> DrillRequest:
        return DrillRequest(index, tier, sent, time.monotonic(), outcome, progress.first_byte, progress.first_token,
                            progress.status, error_type, None if detail is None else detail[:DETAIL_CHARS])

    try:
        outcome, error_type, detail = await asyncio.wait_for(_exchange(http, url, body, headers, progress), timeout_s)
        return row(outcome, error_type, detail)
    except asyncio.TimeoutError:
        return row("timeout", "deadline", f"no end within the client's {timeout_s} s")
    except httpx.TimeoutException as error:
        return row("timeout", type(error).__name__, str(error))
    except (httpx.TransportError, ValueError) as error:  # ValueError: a stream line that is not JSON
        # Before the status line the client knows the transport failed; after a 200 the answer was cut.
        if progress.status is None:
            return row("connection_error", type(error).__name__, str(error))
        if progress.choices and progress.finished:
            return row("success")
        return row("cut", type(error).__name__, str(error))
