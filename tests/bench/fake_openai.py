"""A scripted OpenAI-compatible streaming server for the bench tests (uvicorn in a thread).

It answers `GET /v1/models` and streamed `POST /v1/completions` the way vLLM does: one SSE chunk
per token (`first_token_delay_s`, then `token_gap_s` apart), a last chunk with a finish reason,
a usage chunk with empty choices when `stream_options.include_usage` asks (and `send_usage`),
then `data: [DONE]`. Keys listed in `rejected_keys` get HTTP 401. It records every request's
Authorization header and body and the most requests it had in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeBehaviour:
    first_token_delay_s: float = 0.02
    token_gap_s: float = 0.005
    send_usage: bool = True
    rejected_keys: tuple[str, ...] = ()


@dataclass
class FakeLog:
    authorizations: list[str | None] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def _app(behaviour: FakeBehaviour, log: FakeLog) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def completions(request: Request):
        body = await request.json()
        auth = request.headers.get("authorization")
        log.authorizations.append(auth)
        log.bodies.append(body)
        if auth and auth.removeprefix("Bearer ") in behaviour.rejected_keys:
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        prompt = body["prompt"]
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        max_tokens = int(body["max_tokens"])

        async def events():
            log.in_flight += 1
            log.max_in_flight = max(log.max_in_flight, log.in_flight)
            try:
                await asyncio.sleep(behaviour.first_token_delay_s)
                for i in range(max_tokens):
                    if i:
                        await asyncio.sleep(behaviour.token_gap_s)
                    last = i == max_tokens - 1
                    choice = {"index": 0, "text": f" t{i}", "finish_reason": "length" if last else None}
                    yield f"data: {json.dumps({'id': 'x', 'choices': [choice]})}\n\n"
                if behaviour.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                             "total_tokens": prompt_tokens + max_tokens}
                    yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                log.in_flight -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"])])


class FakeServer:
    """`with FakeServer(behaviour) as server:` serves on 127.0.0.1:`server.port`."""

    def __init__(self, behaviour: FakeBehaviour | None = None) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self.log = FakeLog()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(_app(self.behaviour, self.log), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
