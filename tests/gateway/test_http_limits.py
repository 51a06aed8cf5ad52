"""`lab.gateway.http_server` under hostile clients: slow heads and bodies, idle sockets, huge heads and bodies,
more connections than allowed. Raw sockets on 127.0.0.1 against the real server in a thread, with short limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time

import pytest
import uvicorn

from lab.gateway.cli import uvicorn_limits
from lab.gateway.config import ConfigError, ServerConfig, parse_config
from tests.gateway.fakes import LabServerThread

LIMITS = ServerConfig(header_timeout_s=0.5, body_timeout_s=0.5, keepalive_timeout_s=0.5, max_connections=4,
                      max_header_bytes=8192)
SLACK_S = 2.0  # on top of a deadline: the sweep (0.1 s here) and a busy 2-core machine


async def app(scope, receive, send):
    """Echoes the body; `/slow` answers after 3 s; `/early` answers without reading the body."""
    if scope["type"] != "http":
        return
    body = b""
    if scope["path"] != "/early":
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    if scope["path"] == "/slow":
        await asyncio.sleep(3)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def server(limits: ServerConfig = LIMITS, max_body_bytes: int | None = 1000):
    running = LabServerThread(app, limits=limits, max_body_bytes=max_body_bytes).start()
    try:
        yield running
    finally:
        running.stop()


def read_all(sock: socket.socket, timeout_s: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or `timeout_s`), and when the close came."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic()


def error_of(reply: bytes) -> dict:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]


def test_headers_that_trickle_in_get_a_408_at_the_header_deadline():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        started = time.monotonic()
        for part in (b"POST /x HTTP/1.1\r\n", b"host: x\r\n", b"x-a: 1\r\n"):  # a byte now and then keeps nothing alive
            sock.sendall(part)
            time.sleep(0.2)
        reply, closed = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408") and error_of(reply)["code"] == "header_timeout"
        assert closed - started < 0.5 + SLACK_S


def test_a_body_that_never_completes_gets_a_408_at_the_body_deadline():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        reply, closed = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408") and error_of(reply)["code"] == "body_timeout"
        assert closed - started < 0.5 + SLACK_S


def test_an_idle_connection_is_closed_after_the_keepalive_timeout():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        started = time.monotonic()
        reply, closed = read_all(sock)
        assert reply == b"" and 0.4 <= closed - started < 0.5 + SLACK_S


def test_a_huge_header_gets_a_431_once_the_limit_is_read_not_after_buffering_it():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 8 << 20 and not select.select([sock], [], [], 0.005)[0]:
                sock.sendall(b"a" * 16384)
                sent += 16384
        reply, _ = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 431") and error_of(reply)["code"] == "headers_too_large"
        assert sent < 1 << 20  # refused within the first MiB of a header that would have grown to 8 MiB


def test_a_declared_body_over_the_limit_gets_a_413_before_any_of_it_is_read():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n")
        reply, _ = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 413") and error_of(reply)["code"] == "request_too_large"


def test_a_chunked_body_growing_past_the_limit_gets_a_413_while_it_is_read():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(3):
                sock.sendall(b"258\r\n" + b"b" * 600 + b"\r\n")  # 600 bytes a chunk: past 1000 at the second
                time.sleep(0.05)
        reply, _ = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 413") and b"connection: close" in reply


def test_a_response_sent_before_the_body_was_read_closes_the_connection():
    with server() as running, socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 900\r\n\r\nabc")
        started = time.monotonic()
        reply, closed = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 200") and closed - started < 0.4  # closed at once, not at a deadline


def test_past_max_connections_the_oldest_idle_connection_makes_room_for_a_new_client():
    with server(ServerConfig(keepalive_timeout_s=30, max_connections=4)) as running:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(4)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
            assert read_all(sock)[0].endswith(b"\r\n\r\nhi")
        assert read_all(idle[0], 2)[0] == b""  # the oldest was closed to make room
        for sock in idle:
            sock.close()


def test_past_max_connections_with_every_connection_busy_a_new_client_gets_a_503():
    with server(ServerConfig(max_connections=4)) as running:
        busy = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(4)]
        for sock in busy:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            reply, _ = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply
        assert error_of(reply)["code"] == "too_many_connections"
        assert all(read_all(sock)[0].startswith(b"HTTP/1.1 200") for sock in busy)  # the busy ones finish
        for sock in busy:
            sock.close()


def test_the_server_section_is_validated_and_uvicorn_gets_what_it_offers():
    replica = {"url": "http://127.0.0.1:1", "version": "v1"}
    for bad, field in (({"max_header_bytes": 100}, "server.max_header_bytes"),
                       ({"max_connections": 0}, "server.max_connections"),
                       ({"header_timeout_s": "soon"}, "server.header_timeout_s"),
                       ({"body_timout_s": 3}, "server.body_timout_s")):
        with pytest.raises(ConfigError, match=field):
            parse_config({"replicas": [replica], "server": bad})
    limits = uvicorn_limits(ServerConfig(keepalive_timeout_s=7, max_connections=99, max_header_bytes=4096))
    assert limits == {"limit_concurrency": 99, "timeout_keep_alive": 7, "h11_max_incomplete_event_size": 4096}
    config = uvicorn.Config(app, **limits)
    assert (config.limit_concurrency, config.timeout_keep_alive, config.h11_max_incomplete_event_size) == (99, 7, 4096)
