"""TCP servers for the fault proxy tests, in threads: the far end a proxy relays to.

`echo_server()` echoes every byte and closes after the client's EOF (so a half-close must pass through);
`paced_server(chunks, gap_s)` sends each chunk `gap_s` apart, then closes (an SSE stream's shape).
Both are context managers yielding the port; `connect(port)` opens a client socket with a timeout.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def _serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def echo_server() -> Iterator[int]:
    with _serve(_Echo) as port:
        yield port


@contextmanager
def paced_server(chunks: list[bytes], gap_s: float) -> Iterator[int]:
    class Paced(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            for i, chunk in enumerate(chunks):
                if i:
                    time.sleep(gap_s)
                self.request.sendall(chunk)

    with _serve(Paced) as port:
        yield port


def connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF (raises on a reset)."""
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)
