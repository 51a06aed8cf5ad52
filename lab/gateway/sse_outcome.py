"""How a relayed SSE stream ended, read from its bytes as they pass: completed, or cut or failed upstream.

Contract: `StreamOutcome()`; `feed(chunk)` for every chunk relayed, in order; then `ok` is True only
when the stream's last event was `data: [DONE]` and no event carried an error (a JSON object with a
top-level `error` key, as `lab serve` and vLLM send, or OpenAI's older `"object": "error"`); `reason`
says why not ("no data: [DONE]" or the error's message). A stream a replica cut (drain timeout, a
crash) or that reported an engine error is then counted as an error of its tier, not a success.

Why so cheap: every token of every stream passes here. A chunk is searched for `"error"` at C speed
and parsed only when it holds that word as a JSON string (inside generated text its quotes are
escaped, so text cannot trigger a parse); the end is judged from the stream's last few bytes.
"""

from __future__ import annotations

import json

_DONE = b"data: [DONE]"
_ERROR_KEY = b'"error"'
_TAIL_BYTES = 64  # enough to hold the last event's `data: [DONE]` and its blank line
_MAX_PARTIAL_BYTES = 1 << 16  # an event split across chunks is kept this far, no further


class StreamOutcome:
    def __init__(self) -> None:
        self.error = ""  # the first error event's message
        self._tail = b""
        self._partial = b""  # the unfinished last line of the previous chunk

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._tail = chunk[-_TAIL_BYTES:] if len(chunk) >= _TAIL_BYTES else (self._tail + chunk)[-_TAIL_BYTES:]
        text = self._partial + chunk if self._partial else chunk
        end = text.rfind(b"\n")
        self._partial = text[end + 1:][-_MAX_PARTIAL_BYTES:]
        if _ERROR_KEY in text and not self.error:
            self._scan(text[:end + 1])

    def _scan(self, lines: bytes) -> None:
        for line in lines.split(b"\n"):
            if not line.startswith(b"data:") or _ERROR_KEY not in line:
                continue
            try:
                event = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(event, dict) and ("error" in event or event.get("object") == "error"):
                detail = event.get("error", event)
                message = detail.get("message") if isinstance(detail, dict) else detail
                self.error = str(message or "error event")[:300]
                return

    @property
    def done(self) -> bool:
        return self._tail.rstrip().endswith(_DONE)

    @property
    def ok(self) -> bool:
        return self.done and not self.error

    @property
    def reason(self) -> str:
        if self.error:
            return f"error event: {self.error}"
        return "" if self.done else "the stream ended without data: [DONE]"
