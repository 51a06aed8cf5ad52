"""An HTTP server in a thread that ends each exchange one scripted way, keyed by the request path.

The drill client must classify every way a request can end; a real gateway produces only some of them on
demand, so this server writes the bytes of each case itself: a complete SSE stream, a JSON completion,
an OpenAI-shaped 503, an SSE error event, a stream cut mid-chunk, a stream closed cleanly before its end
marker, a stream with no choice, a request never answered, a connection closed before any response.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHOICE = json.dumps({"choices": [{"index": 0, "text": "hi", "finish_reason": None}]})
FINAL = json.dumps({"choices": [{"index": 0, "text": "!", "finish_reason": "length"}]})
ERROR_503 = json.dumps({"error": {"message": "no replica", "type": "service_unavailable", "code": "no_replica"}})
SSE_ERROR = json.dumps({"error": {"message": "replica died", "type": "upstream_error", "code": "upstream_broke"}})


def _chunk(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: str) -> bytes:
    return _chunk(f"data: {payload}\n\n")


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
SCRIPTS = {
    "/ok-sse": SSE_HEAD + _event(CHOICE) + _event(FINAL) + _event("[DONE]") + b"0\r\n\r\n",
    "/ok-json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(FINAL), FINAL.encode()),
    "/http-503": b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(ERROR_503), ERROR_503.encode()),
    "/sse-error": SSE_HEAD + _event(CHOICE) + _event(SSE_ERROR) + b"0\r\n\r\n",
    "/cut": SSE_HEAD + _event(CHOICE),  # then the connection closes inside the chunked body
    "/early-eof": b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                  + f"data: {CHOICE}\n\n".encode(),  # a body delimited by the close: it ends "cleanly"
    "/empty": SSE_HEAD + _event("[DONE]") + b"0\r\n\r\n",
}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request_line = self.rfile.readline().decode()
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        path = request_line.split(" ")[1]
        if path == "/hang":
            time.sleep(3.0)  # longer than the client's deadline in the tests
            return
        if path == "/close":
            return  # close without a status line
        self.wfile.write(SCRIPTS[path])
        self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def scripted_server() -> Iterator[str]:
    """Yields the base URL; POST <base>/<case> to get that case."""
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
