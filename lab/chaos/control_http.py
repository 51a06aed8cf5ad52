"""A tiny JSON-over-HTTP/1.1 server on asyncio streams: the fault proxy's control API.

Contract: `serve_control(host, port, handle)` starts an asyncio server whose every connection carries
one request (`Connection: close`): it reads the request line, headers and a `Content-Length` body
(at most `MAX_HEADER_BYTES` and `MAX_BODY_BYTES`, within `READ_TIMEOUT_S`), awaits
`handle(method, path, body) -> (status, JSON-able object)` and writes that object as JSON. A request
it cannot read is answered 400 (413 when too large) with `{"error": "<what is wrong>"}`; an exception in
`handle` is a 500 naming it. Why not a framework: the proxy process stays one file of asyncio with no
import cost, and this API has four routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 5.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           500: "Internal Server Error"}

Handler = Callable[[str, str, bytes], Awaitable[tuple[int, Any]]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(413, f"request headers over {MAX_HEADER_BYTES} bytes") from None
    except asyncio.IncompleteReadError:
        raise _BadRequest(400, "connection closed before the end of the headers") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest(400, "Content-Length is not a number") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest(413 if length > 0 else 400, f"body of {length} bytes; at most {MAX_BODY_BYTES}")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1], body


def _response(status: int, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


async def serve_control(host: str, port: int, handle: Handler) -> asyncio.AbstractServer:
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
                status, payload = await handle(method, path, body)
            except _BadRequest as error:
                status, payload = error.status, {"error": str(error)}
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return  # a client that sends nothing in time gets nothing
            except Exception as error:  # noqa: BLE001 - the control API must answer, not die
                status, payload = 500, {"error": f"{type(error).__name__}: {error}"}
            writer.write(_response(status, payload))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(one, host, port, limit=MAX_HEADER_BYTES, reuse_address=True)
