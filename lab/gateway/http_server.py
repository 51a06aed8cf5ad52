"""A small HTTP/1.1 server for the gateway's ASGI app: asyncio + httptools, head and body in one write.

Contract: `serve(app, host, port)` runs an ASGI 3 app (`http` and `lifespan` scopes) on uvloop when
installed, until SIGTERM or SIGINT; then it stops accepting, lets requests in flight finish (at most
`drain_timeout_s`), closes the connections and runs the lifespan shutdown. `HttpServer(app)` is the
same on a running loop (`await start(sock=...)`, `await stop()`), for tests.
HTTP: keep-alive (HTTP/1.1 by default, 1.0 when asked), request bodies with Content-Length or
chunked (httptools de-chunks them), `Expect: 100-continue`, pipelined requests answered in order,
responses with the app's Content-Length or chunked, a Date header, keep-alive connections closed when
idle `keep_alive_s` after a response (as uvicorn), write backpressure (`send` waits while the socket buffer is full), a client
that leaves -> `http.disconnect` from `receive` and `send` becomes a no-op (as uvicorn does). An app
that fails before its response starts gets a 500; after it, the connection is closed. Malformed
requests get a 400 and the connection is closed. Once the app has started, `serve` freezes the objects
alive then out of the cyclic GC's reach (`freeze_startup_objects`). No TLS, HTTP/2 or WebSocket: put a TLS terminator
in front, as one would for uvicorn.

Why: uvicorn (the plain path, `lab gateway --server uvicorn`) writes a response head and its body in
two syscalls and checks every header with a regex; on loopback, on a 2-core machine, a syscall is the
largest single cost of a proxied request. Here the head waits for the first body message, which in
the gateway follows at once for a JSON reply, and is flushed on its own on the next loop turn when
it does not (a stream whose first token is still coming).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import logging
import signal
import socket
import time
from collections import deque
from http import HTTPStatus
from typing import Any

import httptools

from lab.gateway.lifespan import Lifespan

log = logging.getLogger("lab.gateway.http_server")

HIGH_WATER_BYTES = 1 << 16  # request body buffered before reading pauses
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class _DateHeader:
    """`date: ...` bytes, recomputed at most once a second."""

    def __init__(self) -> None:
        self._second, self._line = -1, b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


class _Cycle:
    """One request and its response on a connection: the ASGI `receive` and `send` of that request."""

    def __init__(self, connection: _Connection, scope: dict, keep_alive: bool, expect_continue: bool) -> None:
        self.connection, self.scope, self.keep_alive = connection, scope, keep_alive
        self.expect_continue = expect_continue
        self.body = bytearray()
        self.more_body = True
        self.event = asyncio.Event()
        self.head: bytes | None = None  # written with the first body bytes, or on the next loop turn
        self.chunked = False
        self.started = self.complete = False

    async def receive(self) -> dict:
        connection = self.connection
        if self.expect_continue and not connection.closed:
            connection.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_continue = False
        if not connection.closed and not self.complete:
            # Set by body bytes, the body's end, the response's end or the connection's: once the
            # whole body was read, what is left to hear is a disconnect.
            if self.more_body:
                connection.resume_reading()
            await self.event.wait()
            self.event.clear()
        if connection.closed or self.complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict) -> None:
        connection = self.connection
        if connection.write_paused and not connection.closed:
            await connection.writable.wait()
        if connection.closed:
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
        if self.head is not None and not self.connection.closed:
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
            if not self.started and not self.connection.closed:
                self.connection.transport.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
                                                b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error")
            self.connection.close()
            return
        if not self.complete and not self.connection.closed:
            log.error("ASGI app returned without completing its response; closing the connection")
            self.connection.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server, self.app, self.date = server, server.app, server.date
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.cycle: _Cycle | None = None  # the request being read
        self.running: _Cycle | None = None  # the request being answered
        self.pipeline: deque[_Cycle] = deque()
        self.closed = self.write_paused = self.read_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        # One timer per connection, re-armed only when it fires early: not one per response.
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # loop time of the last response's end while idle; None: busy
        self.server_address: tuple | None = None
        self.client_address: tuple | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect_continue = False

    # --- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sockname, peername = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        self.server_address = tuple(sockname[:2]) if sockname else None
        self.client_address = tuple(peername[:2]) if peername else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)  # idle-timed only once it answered a request, as uvicorn does

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(b"upgrades (WebSocket, h2c) are not supported")
        except httptools.HttpParserError:
            self._refuse(b"malformed HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.idle_since = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.server.connections.discard(self)
        for cycle in (self.running, self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.event.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()

    # --- parser callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._expect_continue = b"", [], False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        version = self.parser.get_http_version()
        path = parsed.path.decode("latin-1")
        if "%" in path:
            from urllib.parse import unquote

            path = unquote(path)
        scope = {"type": "http", "asgi": _ASGI, "http_version": version,
                 "method": self.parser.get_method().decode("ascii"), "scheme": "http", "path": path,
                 "raw_path": parsed.path, "query_string": parsed.query or b"", "root_path": "",
                 "headers": self._headers, "server": self.server_address, "client": self.client_address,
                 "state": dict(self.server.state)}
        self.cycle = _Cycle(self, scope, self.parser.should_keep_alive(), self._expect_continue)
        if self.running is None:
            self._run(self.cycle)
        else:
            self.pipeline.append(self.cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_BYTES:
            self.pause_reading()
        cycle.event.set()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.more_body = False
        cycle.event.set()

    # --- the connection's own
    def _run(self, cycle: _Cycle) -> None:
        self.running = cycle
        task = asyncio.get_running_loop().create_task(cycle.run(self.app))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def response_complete(self, cycle: _Cycle) -> None:
        self.running = None
        if not cycle.keep_alive or self.server.stopping:
            self.close()
            return
        self.resume_reading()
        if self.pipeline:
            self._run(self.pipeline.popleft())
        else:
            self._arm_idle()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _arm_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time()
        if self.idle_timer is None:
            self.idle_timer = loop.call_at(self.idle_since + self.server.keep_alive_s, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self.idle_timer = None
        if self.closed or self.idle_since is None:
            return  # busy: the response that ends it arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() - self.idle_since >= self.server.keep_alive_s:
            self.close()
        else:  # it answered more requests since: wait for the rest of the latest idle period
            self.idle_timer = loop.call_at(self.idle_since + self.server.keep_alive_s, self._on_idle_timer)

    def _refuse(self, message: bytes) -> None:
        if not self.closed:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: "
                                 + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def shutdown(self) -> None:
        """Close when idle; a request being answered finishes first (its connection closes after it)."""
        if self.running is None:
            self.close()


class HttpServer:
    def __init__(self, app: Any, keep_alive_s: float = 5.0, drain_timeout_s: float = 30.0) -> None:
        self.app, self.keep_alive_s, self.drain_timeout_s = app, keep_alive_s, drain_timeout_s
        self.date = _DateHeader()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.state: dict[str, Any] = {}
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: Lifespan | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> None:
        self._lifespan = Lifespan(self.app, self.state)
        await self._lifespan.startup()
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048)
        else:
            self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                                    backlog=2048)

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.drain_timeout_s
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        for task in list(self.tasks):
            task.cancel()
        if self._lifespan is not None:
            await self._lifespan.shutdown()


def freeze_startup_objects() -> None:
    """Move everything alive after startup into the GC's permanent generation.

    The gateway process holds ~80,000 container objects after startup (FastAPI, pydantic, aiohttp,
    prometheus, the config); left in the collected generations, each full collection scans them all,
    a ~120 ms pause measured at 500 req/s, which every request in flight then waits out. Frozen, they
    are never scanned again, and what the collector still sees is what the requests allocate. The
    thresholds stay at CPython's defaults (700, 10, 10): the request path leaves no reference cycles
    behind (`PriorityAdmission._admit` drops its callbacks), so a young collection runs about once per
    thousand requests and takes ~0.3 ms; a larger threshold would only make each pass scan more.
    """
    gc.collect()
    gc.freeze()


async def _serve(app: Any, host: str, port: int, ready: Any = None, freeze_gc: bool = True) -> None:
    server = HttpServer(app)
    await server.start(host, port)
    if freeze_gc:
        freeze_startup_objects()
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
    await server.stop()


def serve(app: Any, host: str, port: int, ready: Any = None, freeze_gc: bool = True) -> None:
    """Serve until SIGTERM/SIGINT; `freeze_gc`: `freeze_startup_objects()` once the app has started."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(app, host, port, ready, freeze_gc))
    else:
        uvloop.run(_serve(app, host, port, ready, freeze_gc))
