"""`lab.gateway.http_server`: the HTTP/1.1 details the gateway's own server must get right, over raw sockets."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from tests.gateway.fakes import LabServerThread, serve

SEEN: list[dict] = []


async def echo(scope, receive, send):
    """Answers the request body back; `/stream` answers in two chunks without a length; `/boom` fails."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    SEEN.append({"path": scope["path"], "method": scope["method"], "body": body})
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def exchange(port: int, raw: bytes, until: bytes, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout_s
        while data.count(until) < 1 and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_keep_alive_pipelining_and_chunked_request_bodies():
    with serve(echo, "lab") as server:
        pipelined = (b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
                     b"POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
                     b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        reply = exchange(server.port, pipelined, b"connection: close")
        heads = [part for part in reply.split(b"HTTP/1.1 ")[1:]]
        assert [h.split(b"\r\n")[0] for h in heads] == [b"200 OK"] * 3
        assert heads[0].endswith(b"\r\n\r\nabc") and heads[1].endswith(b"\r\n\r\ndef")  # answered in order
        assert b"date: " in heads[0] and b"connection: close" in heads[2]


def test_streamed_response_is_chunked_and_arrives_in_pieces():
    with serve(echo, "lab") as server, httpx.Client(base_url=server.url) as client:
        with client.stream("GET", "/stream") as reply:
            assert reply.headers["transfer-encoding"] == "chunked"
            assert list(reply.iter_raw()) == [b"data: 1\n\n", b"data: 2\n\n"]
        assert client.post("/x", content=b"hello").text == "hello"  # the same connection, kept alive


def test_expect_100_continue_and_bad_requests():
    with serve(echo, "lab") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b"ok")
            assert sock.recv(1024).endswith(b"ok")
        assert exchange(server.port, b"NONSENSE\r\n\r\n", b"\r\n\r\n").startswith(b"HTTP/1.1 400")
        reply = exchange(server.port, b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n", b"Internal Server Error")
        assert reply.startswith(b"HTTP/1.1 500") and b"connection: close" in reply
        assert httpx.get(server.url + "/still-up").status_code == 200  # a failing request never stops the server


def test_an_idle_keep_alive_connection_closes_keep_alive_s_after_its_last_response():
    server = LabServerThread(echo, keep_alive_s=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            request = b"POST /k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nk"
            for _ in range(3):  # 0.3 s apart: the first response's 0.5 s run out, the connection stays
                sock.sendall(request)
                assert sock.recv(1024).endswith(b"\r\n\r\nk")
                last = time.monotonic()
                time.sleep(0.3)
            assert sock.recv(1024) == b""  # closed by the server, once idle for 0.5 s
            assert 0.4 <= time.monotonic() - last < 3.0
    finally:
        server.stop()
