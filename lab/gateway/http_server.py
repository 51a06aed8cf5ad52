"""A small HTTP/1.1 server for the gateway's ASGI app: asyncio + httptools, head and body in one write.

Contract: `serve(app, host, port, limits=ServerConfig(), max_body_bytes=None)` runs an ASGI 3 app
(`http` and `lifespan` scopes) on uvloop when installed, until SIGTERM or SIGINT; then it stops
accepting, lets requests in flight finish (at most `drain_timeout_s`), closes the connections and runs
the lifespan shutdown. `HttpServer(app, limits)` is the same on a running loop (`await start(sock=...)`,
`await stop()`), for tests. HTTP: keep-alive (HTTP/1.1 by default, 1.0 when asked), request bodies with
Content-Length or chunked (httptools de-chunks them), `Expect: 100-continue`, pipelined requests
answered in order, responses with the app's Content-Length or chunked, a Date header, write
backpressure (`send` waits while the socket buffer is full), a client that leaves -> `http.disconnect`
from `receive` and `send` becomes a no-op (as uvicorn does); a connection is
`lab.gateway.http_connection`, one request's exchange `lab.gateway.http_cycle`. Once the app has started, `serve` freezes the objects alive then out of the
cyclic GC's reach (`freeze_startup_objects`). No TLS, HTTP/2 or WebSocket: put a TLS terminator in front.

Limits (`ServerConfig`, refusals and phases in `lab.gateway.http_limits`), all answered in OpenAI's error
shape and followed by a close: a request's headers must arrive within `header_timeout_s` of its first
byte (408) and its body within `body_timeout_s` of its headers (408); a connection idle
`keepalive_timeout_s` is closed; a head larger than `max_header_bytes` gets a 431 once that many bytes
came, before more is read or buffered; a body larger than `max_body_bytes` gets a 413 at its
Content-Length or as it grows past the limit. At most `max_connections` connections are open: past it a
new client closes the oldest connection waiting on its own client (idle, or a head still coming), or
gets a 503 when every connection is running a request, so idle and slow clients cannot lock new ones
out nor exhaust file descriptors. A connection whose response ends before its request body was read is
closed rather than read to the end. Malformed requests get a 400.

Why: uvicorn (the plain path, `lab gateway --server uvicorn`) writes a response head and its body in
two syscalls and checks every header with a regex; on loopback, on a 2-core machine, a syscall is the
largest single cost of a proxied request. Here the head waits for the first body message, which in
the gateway follows at once for a JSON reply, and is flushed on its own on the next loop turn when
it does not (a stream whose first token is still coming).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
from typing import Any

from lab.gateway.config import ServerConfig
from lab.gateway.http_connection import Connection
from lab.gateway.http_cycle import DateHeader
from lab.gateway.http_limits import BUSY, connection_room, raise_fd_limit, refusal, sweep_interval_s
from lab.gateway.lifespan import Lifespan

log = logging.getLogger("lab.gateway.http_server")


class HttpServer:
    def __init__(self, app: Any, limits: ServerConfig | None = None, drain_timeout_s: float = 30.0,
                 max_body_bytes: int | None = None) -> None:
        self.app, self.drain_timeout_s, self.max_body_bytes = app, drain_timeout_s, max_body_bytes
        self.limits = limits or ServerConfig()
        self.max_connections = connection_room(self.limits.max_connections)
        self.date = DateHeader()
        self.connections: set[Connection] = set()
        # Connections waiting on their client (idle, or a head still coming), oldest first: evicted first.
        self.waiting: dict[Connection, None] = {}
        self.tasks: set[asyncio.Task] = set()
        self.state: dict[str, Any] = {}
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: Lifespan | None = None
        self._sweeper: asyncio.Task | None = None

    def admit(self, connection: Connection) -> bool:
        """Make room for a new connection: the oldest waiting one closes, or the new one gets a 503."""
        if len(self.connections) >= self.max_connections:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                connection.transport.write(refusal(503, f"the server has {len(self.connections)} connections open, "
                                                        "its limit, all busy; retry shortly", "too_many_connections",
                                                   headers=(("retry-after", "1"),)))
                connection.closed = connection.finished = True
                connection.transport.close()
                return False
            oldest.close()
        self.connections.add(connection)
        return True

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.waiting.pop(connection, None)

    async def _sweep(self) -> None:
        interval = sweep_interval_s(self.limits)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for connection in [c for c in self.connections if c.phase is not BUSY and c.deadline <= now]:
                connection.on_deadline()

    async def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._lifespan = Lifespan(self.app, self.state)
        await self._lifespan.startup()
        if sock is not None:
            self._server = await self.loop.create_server(lambda: Connection(self), sock=sock, backlog=2048)
        else:
            self._server = await self.loop.create_server(lambda: Connection(self), host, port, reuse_address=True,
                                                         backlog=2048)
        self._sweeper = self.loop.create_task(self._sweep())

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
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


async def _serve(app: Any, host: str, port: int, ready: Any, freeze_gc: bool, limits: ServerConfig | None,
                 max_body_bytes: int | None) -> None:
    server = HttpServer(app, limits, max_body_bytes=max_body_bytes)
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


def serve(app: Any, host: str, port: int, ready: Any = None, freeze_gc: bool = True,
          limits: ServerConfig | None = None, max_body_bytes: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT; `freeze_gc`: `freeze_startup_objects()` once the app has started."""
    raise_fd_limit()  # before the server sizes its connection cap to the descriptors it may open
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(app, host, port, ready, freeze_gc, limits, max_body_bytes))
    else:
        uvloop.run(_serve(app, host, port, ready, freeze_gc, limits, max_body_bytes))
