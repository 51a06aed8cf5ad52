"""A purpose-built OpenAI-shaped replica for the hardening tests: it misbehaves on request, as a real one can.

`python -m tests.gateway.upstreams --port N` serves it as a real process on 127.0.0.1:N (until SIGTERM);
`UpstreamThread().start()` serves it on a free port in a thread of the test process. HTTP/1.1 with
keep-alive on asyncio streams. The request's `prompt` (or first message's content) says how to answer:
  "poison"        400 in OpenAI's error shape (a request the engine cannot run: its own fault)
  "status-NNN"    status NNN in OpenAI's error shape (e.g. status-404, status-422, status-500)
  "hang"          read the request, never answer (the connection stays open)
  "slow-S"        answer after S seconds
anything else     a JSON completion, or with `"stream": true` an SSE stream of three events and
                  `data: [DONE]`, changed by the prompt: "stall" (one event, then silence), "cut" (the
                  events, then the body ends without [DONE]), "error-event" (one event, an engine error
                  event, then [DONE], as `lab serve` reports an engine failure mid-stream).
`GET /v1/models` lists the model `echo`; `GET /stats` answers the number of requests seen per prompt.
`UpstreamThread(hang=True)` (or `--hang`) leaves every POST unanswered, whatever its prompt: a replica
whose HTTP front accepts work its hung engine never does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import threading
from collections import Counter

MODEL = "echo"


def _event(payload: dict) -> bytes:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json(status: int, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)


def _error(status: int, message: str) -> bytes:
    return _json(status, {"error": {"message": message, "type": "invalid_request_error" if status < 500
                                    else "internal_server_error", "param": None, "code": f"status_{status}"}})


class Upstream:
    def __init__(self, hang: bool = False) -> None:
        self.seen: Counter[str] = Counter()
        self.hang = hang

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                body = json.loads(await reader.readexactly(length)) if length else {}
                if not await self.answer(method, path, body, writer):
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, body: dict, writer: asyncio.StreamWriter) -> bool:
        """Write the answer; False when the connection should end here."""
        if method == "GET":
            payload = dict(self.seen) if path == "/stats" else {"object": "list", "data": [{"id": MODEL}]}
            writer.write(_json(200, payload))
            return True
        prompt = body.get("prompt") or (body.get("messages") or [{}])[0].get("content") or ""
        self.seen[prompt] += 1
        if prompt == "hang" or self.hang:
            await asyncio.sleep(3600)
        elif prompt == "poison":
            writer.write(_error(400, "seed is beyond 64 bits: the engine cannot represent it"))
        elif prompt.startswith("status-"):
            writer.write(_error(int(prompt[7:]), f"answered {prompt}"))
        elif body.get("stream"):
            return await self.stream(prompt, writer)
        else:
            if prompt.startswith("slow-"):
                await asyncio.sleep(float(prompt[5:]))
            writer.write(_json(200, {"id": "x", "object": "text_completion", "model": MODEL,
                                     "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]}))
        return True

    async def stream(self, prompt: str, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(1 if prompt in ("stall", "error-event") else 3):
            writer.write(_event({"id": "x", "choices": [{"index": 0, "text": f"t{i}", "finish_reason": None}]}))
            await writer.drain()
            await asyncio.sleep(0.02)
        if prompt == "stall":
            await asyncio.sleep(3600)
        if prompt == "error-event":
            writer.write(_event({"error": {"message": "the engine failed while running this request",
                                           "type": "internal_server_error", "param": None, "code": "engine_error"}}))
        if prompt != "cut":
            writer.write(b"%x\r\ndata: [DONE]\n\n\r\n" % len(b"data: [DONE]\n\n"))
        writer.write(b"0\r\n\r\n")
        return True


class UpstreamThread:
    """`Upstream` on its own event loop in a daemon thread, on a free 127.0.0.1 port."""

    def __init__(self, hang: bool = False) -> None:
        self.upstream = Upstream(hang)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self.upstream.handle, sock=self.sock)
        self._started.set()
        await self._stop.wait()
        server.close()

    def start(self) -> UpstreamThread:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("test upstream did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)

    def __enter__(self) -> UpstreamThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(port: int, hang: bool) -> None:
    server = await asyncio.start_server(Upstream(hang).handle, "127.0.0.1", port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"test upstream: http://127.0.0.1:{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", action="store_true", help="leave every POST unanswered")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.hang))
