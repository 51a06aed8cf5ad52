"""Test doubles for the gateway tests: a fake clock, a replica double, a server in a thread.

`FakeClock` is advanced by hand. `FakeReplica` is a small OpenAI-compatible HTTP server (FastAPI)
whose behaviour a test sets: answer, fail with 500, be slow, stream slowly; it records the bodies
it received. `serve(app)` runs any ASGI app on a free 127.0.0.1 port in a thread, with uvicorn or
(`server="lab"`) with the gateway's own `lab.gateway.http_server`, under the limits of the gateway's
config (`server` section, `proxy.max_body_bytes`) when the app is a gateway, as `lab gateway` does.
`make_config(...)` builds a gateway config with known keys (plain keys in `KEYS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lab.gateway.auth import hash_key
from lab.gateway.config import parse_config

KEYS = {"vip": "sk-test-vip", "realtime": "sk-test-realtime", "async": "sk-test-async", "batch": "sk-test-batch"}
ADMIN_KEY = "sk-test-admin"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeReplica:
    """An OpenAI-compatible replica double. Modes: ok, fail (500), break (dies after the first SSE chunk)."""

    def __init__(self, name: str = "replica", model: str = "tiny") -> None:
        self.name, self.model = name, model
        self.mode = "ok"
        self.delay_s = 0.0
        self.chunk_delay_s = 0.0  # pause between SSE chunks when streaming
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.stream_finished = threading.Event()
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

        async def answer(request: Request, kind: str):
            body = await request.json()
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            if self.mode == "fail" or (self.mode == "break" and not body.get("stream")):
                return JSONResponse({"error": {"message": f"{self.name} is broken"}}, status_code=500)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if body.get("stream"):
                return StreamingResponse(self._stream(kind), media_type="text/event-stream")
            text = f"hello from {self.name}"
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if kind == "chat" else {"index": 0, "text": text, "finish_reason": "stop"})
            return {"id": "x", "object": kind, "model": self.model, "choices": [choice],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await answer(request, "text_completion")

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await answer(request, "chat")

        return app

    async def _stream(self, kind: str):
        self.stream_finished.clear()
        for i in range(3):
            delta = {"content": f"t{i}"} if kind == "chat" else None
            choice = {"index": 0, "delta": delta, "finish_reason": None} if delta else {"index": 0, "text": f"t{i}"}
            yield f"data: {json.dumps({'id': 'x', 'choices': [choice]})}\n\n".encode()
            if self.mode == "break":
                raise RuntimeError(f"{self.name} crashed mid-stream")  # uvicorn drops the connection
            await asyncio.sleep(self.chunk_delay_s)
        self.stream_finished.set()
        yield b"data: [DONE]\n\n"


class ServerThread:
    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class LabServerThread:
    """`lab.gateway.http_server.HttpServer` on its own event loop in a thread."""

    def __init__(self, app: Any, keep_alive_s: float = 5.0, limits: Any = None,
                 max_body_bytes: int | None = None) -> None:
        from lab.gateway.config import ServerConfig

        gateway = getattr(getattr(app, "state", None), "gateway", None)
        if limits is None and gateway is not None:  # the wiring of `lab gateway` (lab.gateway.cli)
            limits, max_body_bytes = gateway.config.server, gateway.config.proxy.max_body_bytes
        self.app = app
        self.limits = limits or ServerConfig(keepalive_timeout_s=keep_alive_s)
        self.max_body_bytes = max_body_bytes
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from lab.gateway.http_server import HttpServer

        async def main() -> None:
            self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            server = HttpServer(self.app, self.limits, drain_timeout_s=5.0, max_body_bytes=self.max_body_bytes)
            await server.start(sock=self.sock)
            self.started.set()
            await self._stop.wait()
            await server.stop()

        asyncio.run(main())

    def start(self) -> LabServerThread:
        self.thread.start()
        if not self.started.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def serve(app: Any, server: str = "uvicorn") -> Iterator[ServerThread | LabServerThread]:
    server = (LabServerThread if server == "lab" else ServerThread)(app).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tier(name: str, priority: int, concurrency: int = 8, timeout_ms: int = 5000, rps: float = 1000.0,
         tps: float = 1e7) -> dict:
    limit = {"requests_per_s": rps, "request_burst": max(rps, 1.0), "tokens_per_s": tps, "token_burst": tps}
    return {"name": name, "priority": priority, "max_concurrency": concurrency, "timeout_ms": timeout_ms,
            "tier_limit": limit, "key_limit": limit}


def make_config(replicas: list[dict], tiers: list[dict] | None = None, **sections: Any):
    tiers = tiers or [tier("vip", 0), tier("realtime", 1), tier("async", 2), tier("batch", 3)]
    keys = [{"name": f"key-{t['name']}", "tier": t["name"], "hash": hash_key(KEYS[t["name"]])} for t in tiers]
    data = {"tiers": tiers, "keys": keys, "replicas": replicas, "admin_key_hash": hash_key(ADMIN_KEY), **sections}
    return parse_config(data)


def auth(tier_name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tier_name]}"}
