"""Reading a request body safely: a size cap, large bodies parsed off the event loop, hostile JSON refused.

Contract of `await read_body(request, max_bytes)` and `parse_json_object(raw)`:
- 413 `request_too_large` naming the limit when the declared Content-Length, or the bytes actually
  received, exceed `max_bytes` (reading stops there: a huge body is never buffered whole);
- 400 `invalid_json` for malformed JSON, invalid UTF-8, JSON nested too deeply for the parser (a
  100k-deep array raises RecursionError inside `json`), or a body that is not an object;
- 400 `invalid_unicode` naming the field (e.g. `messages.0.content`, `prompt`) whose string holds
  a lone UTF-16 surrogate: JSON may escape one (`"\\ud800"`), Python decodes it into a `str` that
  has no UTF-8 form, and the tokenizer (or the encoder of any answer that echoes it) would fail.
`run_off_loop(fn, size)` runs the parse (and validation) of a body above `OFF_LOOP_BYTES` on a
worker thread: it holds the GIL, but the interpreter switches threads every few milliseconds, so
the event loop keeps streaming other requests while a 10 MB body is decoded.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request

from lab.server.errors import APIError

OFF_LOOP_BYTES = 256 * 2**10  # bodies above this are parsed on a worker thread (~ms of work on the loop below)
# A JSON escape of a surrogate code point: the only way a lone surrogate can reach a decoded string
# (raw UTF-8 bytes cannot encode one; strict decoding refuses them). Only then is the slow walk needed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}|\\u[dD][c-fC-F][0-9a-fA-F]{2}")
T = TypeVar("T")


def too_large(size: int | None, max_bytes: int) -> APIError:
    size_text = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return APIError(413, f"the request body is {size_text}, over this server's limit of {max_bytes} bytes "
                         "(lab serve --max-request-bytes)", code="request_too_large")


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(int(declared), max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # chunked, or a Content-Length that lied: stop reading now
            raise too_large(None, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def run_off_loop(fn: Callable[[], T], size: int) -> T:
    return await asyncio.to_thread(fn) if size > OFF_LOOP_BYTES else fn()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON in the request body: {exc}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the JSON body is nested too deeply to parse", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}",
                       code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw):
        bad = _lone_surrogate_path(data)
        if bad is not None:
            raise APIError(400, f"{bad} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape): "
                                "it is not valid Unicode text", param=bad, code="invalid_unicode")
    return data


def _lone_surrogate_path(data: Any) -> str | None:
    """The dotted path of the first string (or key) with a lone surrogate, or None. Iterative:
    nesting depth cannot overflow the stack."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return ".".join(str(p) for p in path) or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _encodable(key):
                    return ".".join(str(p) for p in (*path, "<key>")) if path else "<key>"
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in enumerate(value) if isinstance(item, (str, dict, list)))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
