"""One client connection of `lab.gateway.http_server`: parsing, pipelining, phases and limits, refusals.

Contract: `Connection(server)` is the asyncio protocol of one accepted socket. It feeds httptools, turns
each request into a `lab.gateway.http_cycle.Cycle` run as a task (pipelined ones wait their turn, reading
paused), keeps its phase and deadline for the server's sweep (`lab.gateway.http_limits`: IDLE, HEAD,
BODY, BUSY, LINGER), counts a head's bytes as they come (431 at `max_header_bytes`) and a body's (413
past `max_body_bytes`), and ends with `close()` (at once) or `linger()` (after a final answer while the
client may still be sending). What it reads of the server: `limits`, `max_body_bytes`, `loop`, `date`,
`state`, `tasks`, `waiting` (connections waiting on their client, oldest first) and `forget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lab.gateway.http_cycle import Cycle
from lab.gateway.http_limits import BODY, BUSY, HEAD, IDLE, LINGER, LINGER_BYTES, LINGER_S, refusal

if TYPE_CHECKING:
    from lab.gateway.http_server import HttpServer

HIGH_WATER_BYTES = 1 << 16  # request body buffered before reading pauses
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server, self.app, self.date, self.limits = server, server.app, server.date, server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.cycle: Cycle | None = None  # the request being read
        self.running: Cycle | None = None  # the request being answered
        self.pipeline: deque[Cycle] = deque()
        self.closed = self.write_paused = self.read_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.phase, self.deadline = IDLE, 0.0  # see lab.gateway.http_limits; checked by the server's sweep
        self.reading_head = True  # between a message's end (or the connection's start) and the next headers
        self.lingering, self.linger_bytes = False, 0  # answered for good; what the client still sends is dropped
        self.finished = False  # closed or lingering: parse nothing more, run nothing more
        self.head_bytes = 0  # bytes fed while reading a head (an upper bound of the head's size)
        self.server_address: tuple | None = None
        self.client_address: tuple | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect_continue = False
        self._declared_length = 0

    # --- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.server.admit(self):
            return
        sockname, peername = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        self.server_address = tuple(sockname[:2]) if sockname else None
        self.client_address = tuple(peername[:2]) if peername else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._wait_for_client()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.linger_bytes += len(data)
            if self.linger_bytes > LINGER_BYTES:
                self.close()
            return
        if self.phase is IDLE:  # the first bytes of a request: its headers are due
            self._enter(HEAD, self.limits.header_timeout_s)
        limit = self.limits.max_header_bytes
        try:
            while data and not self.finished:
                if not self.reading_head:
                    self.parser.feed_data(data)
                    return
                # Reading a head: feed at most what keeps it within the limit, so a huge head is
                # refused once `limit` bytes came, never buffered whole (httptools keeps a header
                # value until it ends).
                room = limit - self.head_bytes
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
                self.head_bytes += len(piece)  # reset inside feed_data when a message ends
                self.parser.feed_data(piece)
                if self.reading_head and self.head_bytes >= limit:
                    self._refuse(431, f"request headers are larger than the server's limit of {limit} bytes",
                                 "headers_too_large")
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrades (WebSocket, h2c) are not supported", "upgrade_not_supported")
        except httptools.HttpParserError:
            self._refuse(400, "malformed HTTP request", "malformed_request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.finished = True
        self.server.forget(self)
        self._wake_cycles()
        self.writable.set()

    def _wake_cycles(self) -> None:
        """Their `receive` returns: `http.disconnect`, now that the connection is done."""
        for cycle in (self.running, self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.event.set()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()

    # --- parser callbacks
    def on_message_begin(self) -> None:
        self.cycle = None  # the previous request's body is complete: nothing more goes to it
        self._url, self._headers, self._expect_continue, self._declared_length = b"", [], False, 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif name == b"content-length" and value.isdigit():
            self._declared_length = int(value)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.reading_head = False
        if self.finished:  # refused earlier in this chunk: run nothing more
            return
        limit = self.server.max_body_bytes
        if limit is not None and self._declared_length > limit:
            self._refuse_body(limit)
            return
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
        self.cycle = Cycle(self, scope, self.parser.should_keep_alive(), self._expect_continue)
        if self.running is None:
            self._run(self.cycle)
        else:
            self.pipeline.append(self.cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.complete or self.finished:
            return
        cycle.body_bytes += len(body)
        limit = self.server.max_body_bytes
        if limit is not None and cycle.body_bytes > limit:  # a chunked body, counted as it comes
            self._refuse_body(limit)
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_BYTES:
            self.pause_reading()
        cycle.event.set()

    def on_message_complete(self) -> None:
        self.reading_head, self.head_bytes = True, 0
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.more_body = False
        cycle.event.set()
        if cycle is self.running:
            self.phase = BUSY

    # --- the connection's own
    def _enter(self, phase: str, timeout_s: float) -> None:
        self.phase, self.deadline = phase, self.server.loop.time() + timeout_s

    def _wait_for_client(self) -> None:
        """No request runs: wait for the next one's bytes (or the rest of its head), evictable meanwhile."""
        if self.reading_head and self.head_bytes:
            self._enter(HEAD, self.limits.header_timeout_s)
        else:
            self._enter(IDLE, self.limits.keepalive_timeout_s)
        self.server.waiting[self] = None

    def _run(self, cycle: Cycle) -> None:
        self.running = cycle
        self.server.waiting.pop(self, None)
        if cycle.more_body:
            self._enter(BODY, self.limits.body_timeout_s)
        else:
            self.phase = BUSY
        task = asyncio.get_running_loop().create_task(cycle.run(self.app))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def response_complete(self, cycle: Cycle) -> None:
        self.running = None
        if cycle.more_body:  # a body nobody read is not read to its end just to keep the connection
            self.linger()
            return
        if not cycle.keep_alive or self.server.stopping:
            self.close()
            return
        self.resume_reading()
        if self.pipeline:
            self._run(self.pipeline.popleft())
        else:
            self._wait_for_client()

    def on_deadline(self) -> None:
        phase, self.phase = self.phase, BUSY
        if phase is IDLE or phase is LINGER:
            self.close()
        elif phase is HEAD:
            self._refuse(408, f"the request's headers did not arrive within {self.limits.header_timeout_s:g} s",
                         "header_timeout")
        elif phase is BODY:
            if self.running is not None and self.running.started:
                self.close()
            else:
                self._refuse(408, f"the request's body did not arrive within {self.limits.body_timeout_s:g} s",
                             "body_timeout")

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, message: str, code: str) -> None:
        if not self.finished and (self.running is None or not self.running.started):
            self.transport.write(refusal(status, message, code))
            self.linger()
        else:
            self.close()

    def linger(self) -> None:
        """Close after a final answer while the client may still be sending: stop writing, then drop what it
        sends for at most LINGER_S and LINGER_BYTES before closing. Closing at once with its bytes unread
        would send a reset, which can discard the answer before the client reads it (nginx's lingering close)."""
        if self.closed or self.lingering:
            return
        if not self.transport.can_write_eof():
            self.close()
            return
        self.transport.write_eof()
        self.lingering = self.finished = True
        self._wake_cycles()
        self.resume_reading()
        self._enter(LINGER, LINGER_S)
        self.server.waiting[self] = None  # evictable: it serves nobody any more

    def _refuse_body(self, limit: int) -> None:
        self._refuse(413, f"request body is larger than the gateway's limit of {limit} bytes", "request_too_large")

    def close(self) -> None:
        if not self.closed:
            self.closed = self.finished = True
            self.transport.close()
            self.server.forget(self)  # at once: the connection cap counts open connections

    def shutdown(self) -> None:
        """Close when idle; a request being answered finishes first (its connection closes after it)."""
        if self.running is None:
            self.close()
