"""A small HTTP/1.1 client for the upstream leg: keep-alive connections per replica, parsed by httptools.

Contract: `HttpPools(config, max_connections)` has the interface of `lab.gateway.connection_pools.UpstreamPools`
(`session(url)`, `close()`). `await session(url).post(url, data=..., headers=...)` sends one request
on an idle keep-alive connection to that replica (a new one when none is idle; at most
`max_connections` open, more requests wait for one) and returns an `HttpResponse` as soon as the
response head is in: `status`, `headers` (lower-case names), `raw_headers`, `content_length`,
`await read()` (the whole body), `await content.readany()` (what has arrived, b"" at the end),
`release()` (the body was read to its end: the connection goes back to the pool) and `close()`
(drop the connection: the replica sees its client leave and aborts). Failures: `UpstreamError` (a
`ConnectionError`: refused, reset, closed before the response ended, a malformed response) and
`asyncio.TimeoutError` (no connection within `connect_timeout_s`, no byte for the response's
`read_timeout_s`, `ProxyConfig.read_timeout_s` unless changed, while waiting for one, or a wait past
the response's `deadline`: `post(..., deadline=loop_time)`, the proxy's first-byte budget, at no cost
of a timer of its own). A reused connection that fails before any response byte (the replica closed
it while it was idle) is retried once on a new connection.

Why: aiohttp (`proxy.client: aiohttp`, the plain path) spends ~250 us of CPU on a proxied POST on
this machine (request and response objects, URL and multidict handling, a writer task, timers); this
client spends ~40 us: one write of head and body, and httptools parsing the reply in C.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

from lab.gateway.config import ProxyConfig

KEEP_ALIVE_S = 30.0  # an idle connection older than this is closed rather than reused (as aiohttp's default)


class UpstreamError(ConnectionError):
    """The replica's connection failed: refused, reset, closed early, or a malformed response."""


class HttpResponse:
    """One response, read from its connection as it arrives (the subset of aiohttp's ClientResponse used here)."""

    def __init__(self, connection: _Connection, read_timeout_s: float, deadline: float | None = None) -> None:
        self._connection: _Connection | None = connection
        self.read_timeout_s = read_timeout_s  # the longest wait for the next byte; the proxy shortens it per tier
        self.deadline = deadline  # loop time no wait may pass (the tier's first-byte budget); None: none
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None
        self._chunks: list[bytes] = []
        self._head = self._done = self._keep_alive = False
        self._received_any = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self.content = self  # `response.content.readany()`, as with aiohttp

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw_headers}
        return self._headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    # --- fed by the connection
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_done(self, status: int) -> None:
        self.status, self._head, self._received_any = status, True, True
        self._wake()

    def _feed(self, body: bytes) -> None:
        self._chunks.append(body)
        self._wake()

    def _eof(self, keep_alive: bool) -> None:
        self._done, self._keep_alive = True, keep_alive
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    # --- read by the gateway
    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timeout = self.read_timeout_s if self.deadline is None else min(self.read_timeout_s, self.deadline - loop.time())
        timer = loop.call_later(timeout, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    async def _wait_head(self) -> None:
        while not self._head:
            await self._wait()

    async def read(self) -> bytes:
        while not self._done:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks = []
        return body

    async def readany(self) -> bytes:
        while not self._chunks and not self._done:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks = []
        return body

    def release(self) -> None:
        """Back to the pool when the body was read to its end on a keep-alive connection; else close."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._done and self._keep_alive and not self._chunks and not connection.closed:
            connection.pool.put_back(connection)
        else:
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _Connection(asyncio.Protocol):
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: HttpResponse | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not in a known state
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.response._fail(UpstreamError(f"malformed response from the replica: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            headers = response.headers if response._head else {}
            if exc is None and response._head and "content-length" not in headers \
                    and "chunked" not in headers.get("transfer-encoding", ""):
                response._eof(keep_alive=False)  # a body without a length ends where the connection does
            else:
                response._fail(UpstreamError(f"the replica closed the connection: {exc or 'EOF'}"))
        self.pool.forget(self)

    # --- parser callbacks (httptools)
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.response._head_done(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None  # any later byte is unexpected
        response._eof(self.parser.should_keep_alive())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)


class ReplicaPool:
    """The keep-alive connections to one replica (scheme, host and port of its URL)."""

    def __init__(self, url: str, config: ProxyConfig, max_connections: int) -> None:
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host, self.ssl = parts.hostname or "127.0.0.1", parts.scheme == "https"
        self.port = parts.port or (443 if self.ssl else 80)
        self._host_line = b"host: " + parts.netloc.encode("idna") + b"\r\n"
        self.config, self.max_connections = config, max_connections
        self.idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._waiters: deque[asyncio.Future] = deque()
        self.closed = False

    def _request(self, url: str, data: bytes, headers: dict[str, str]) -> bytes:
        if not url.startswith(self.origin):
            raise ValueError(f"{url} is not on {self.origin}")
        path = url[len(self.origin):] or "/"
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
        return (b"POST " + path.encode("ascii") + b" HTTP/1.1\r\n" + self._host_line + lines
                + b"content-length: %d\r\n\r\n" % len(data) + data)

    async def post(self, url: str, data: bytes, headers: dict[str, str], deadline: float | None = None) -> HttpResponse:
        request = self._request(url, data, headers)
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            response = HttpResponse(connection, self.config.read_timeout_s, deadline)
            connection.response = response
            connection.transport.write(request)
            try:
                await response._wait_head()
            except UpstreamError:
                response.close()
                if reused and attempt == 1 and not response._received_any:
                    continue  # the replica closed it while idle: once more on a new connection
                raise
            except BaseException:  # a timeout, or cancelled (the client left): drop the connection
                response.close()
                raise
            return response
        raise AssertionError("unreachable")

    async def _acquire(self) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        while True:
            if self.closed:
                raise UpstreamError("the connection pool is closed")
            while self.idle:
                connection = self.idle.pop()
                if not connection.closed and loop.time() - connection.idle_since < KEEP_ALIVE_S:
                    return connection, True
                connection.close()
            if len(self._open) < self.max_connections:
                return await self._connect(), False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        placeholder = _Placeholder()
        self._open.add(placeholder)  # counts against the limit while connecting
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port,
                                       ssl=ssl.create_default_context() if self.ssl else None),
                self.config.connect_timeout_s)
        except OSError as error:
            raise UpstreamError(f"cannot connect to {self.origin}: {type(error).__name__}: {error}") from None
        finally:
            self._open.discard(placeholder)
            self._notify()
        self._open.add(connection)
        return connection

    def put_back(self, connection: _Connection) -> None:
        if self.closed:
            connection.close()
            return
        connection.response = None
        connection.idle_since = asyncio.get_running_loop().time()
        self.idle.append(connection)
        self._notify()

    def forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            with contextlib.suppress(ValueError):
                self.idle.remove(connection)
            self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for connection in list(self._open):
            if isinstance(connection, _Connection):
                connection.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Placeholder:
    """A connection being opened, counted against the pool's limit."""


class HttpPools:
    """One `ReplicaPool` per replica URL, created on first use."""

    def __init__(self, config: ProxyConfig, max_connections: int) -> None:
        self.config, self.max_connections = config, max_connections
        self._pools: dict[str, ReplicaPool] = {}

    def session(self, url: str) -> ReplicaPool:
        pool = self._pools.get(url)
        if pool is None or pool.closed:
            pool = self._pools[url] = ReplicaPool(url, self.config, self.max_connections)
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
