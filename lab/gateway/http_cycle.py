"""One request and its response on a connection of `lab.gateway.http_server`: the ASGI `receive` and `send`.

Contract: `Cycle(connection, scope, keep_alive, expect_continue)`; the connection appends body bytes to
`body`, sets `more_body = False` at the body's end and sets `event` on either; `run(app)` calls the app
with `receive` (the body as it comes, then `http.disconnect` once the connection closes or the response
ended) and `send` (`http.response.start` is held and written with the first body bytes, or on its own on
the next loop turn; Content-Length or chunked; a no-op once the client left). `send` waits while the
socket's write buffer is full. An app that fails before its response starts gets a 500 in OpenAI's
error shape; after it, the connection is closed.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from lab.gateway.http_limits import refusal

if TYPE_CHECKING:
    from lab.gateway.http_connection import Connection

log = logging.getLogger("lab.gateway.http_server")

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class DateHeader:
    """`date: ...` bytes, recomputed at most once a second."""

    def __init__(self) -> None:
        self._second, self._line = -1, b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


class Cycle:
    def __init__(self, connection: Connection, scope: dict, keep_alive: bool, expect_continue: bool) -> None:
        self.connection, self.scope, self.keep_alive = connection, scope, keep_alive
        self.expect_continue = expect_continue
        self.body = bytearray()
        self.body_bytes = 0  # received so far, for the server's body limit
        self.more_body = True
        self.event = asyncio.Event()
        self.head: bytes | None = None  # written with the first body bytes, or on the next loop turn
        self.chunked = False
        self.started = self.complete = False

    async def receive(self) -> dict:
        connection = self.connection
        if self.expect_continue and not connection.finished:
            connection.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_continue = False
        if not connection.finished and not self.complete:
            # Set by body bytes, the body's end, the response's end or the connection's: once the
            # whole body was read, what is left to hear is a disconnect.
            if self.more_body:
                connection.resume_reading()
            await self.event.wait()
            self.event.clear()
        if connection.finished or self.complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict) -> None:
        connection = self.connection
        if connection.write_paused and not connection.finished:
            await connection.writable.wait()
        if connection.finished:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.started = True
            self._prepare_head(message["status"], message.get("headers", ()))
            asyncio.get_running_loop().call_soon(self._flush_head)
            return
        if kind != "http.response.body" or self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r} (response complete: {self.complete})")
        body, more = message.get("body", b""), message.get("more_body", False)
        parts = [self.head] if self.head is not None else []
        self.head = None
        if self.chunked:
            if body:
                parts += [b"%x\r\n" % len(body), body, b"\r\n"]
            if not more:
                parts.append(b"0\r\n\r\n")
        elif body and self.scope["method"] != "HEAD":
            parts.append(body)
        if parts:
            connection.transport.write(b"".join(parts) if len(parts) > 1 else parts[0])
        if not more:
            self.complete = True
            self.event.set()
            connection.response_complete(self)

    def _prepare_head(self, status: int, headers: Any) -> None:
        if self.more_body:  # answered before its body was read: the connection ends with this response
            self.keep_alive = False
        lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(), self.connection.date.line()]
        framed = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" or (name == b"transfer-encoding" and value.lower() == b"chunked"):
                framed = True
                self.chunked = name == b"transfer-encoding"
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                raise RuntimeError("invalid header: CR or LF in a header name or value")
            lines += [name, b": ", value, b"\r\n"]
        if not framed and status not in (204, 304) and not 100 <= status < 200 and self.scope["method"] != "HEAD":
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)

    def _flush_head(self) -> None:
        if self.head is not None and not self.connection.finished:
            self.connection.transport.write(self.head)
            self.head = None

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as error:  # noqa: BLE001 - the app's failure is answered, never the server's end
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            if not isinstance(error, asyncio.CancelledError):  # cancelled: the server is stopping
                log.error("exception in ASGI app", exc_info=error)
            if not self.started and not self.connection.finished:
                self.connection.transport.write(refusal(500, "the server failed on this request", "internal_error",
                                                        "internal_server_error"))
                self.connection.linger()
            else:
                self.connection.close()
            return
        if not self.complete and not self.connection.finished:
            log.error("ASGI app returned without completing its response; closing the connection")
            self.connection.close()
