"""The gateway as an ASGI app: the request path from key to replica and back.

Contract: `build_app(config)` returns a FastAPI app serving `/v1/completions` and
`/v1/chat/completions` (forwarded), `/v1/models`, `/health` (alive), `/ready` (some replica is
healthy), `/metrics` and the admin endpoints (`lab.gateway.admin`). A forwarded request goes:
key -> tier (401 without a valid key) -> token buckets (429 + Retry-After) -> priority queue
(504 with tier and waited_ms past the tier's timeout) -> replica (502/503 when none answers) ->
the replica's bytes, streamed as they arrive. Its slot and outstanding work are given back when
the response ends, however it ends. Everything with a clock or randomness takes it as an
argument (`clock`, `uniform`), and the health loop can be left off (`run_health=False`) so tests
drive rounds themselves; there is no module state, so several apps can live in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from lab.gateway.admin import admin_router
from lab.gateway.auth import KeyStore, bearer_token
from lab.gateway.buckets import RateLimiter
from lab.gateway.canary import CanaryController
from lab.gateway.config import GatewayConfig
from lab.gateway.errors import GatewayError, unauthorized
from lab.gateway.health import HealthChecker
from lab.gateway.metrics import GatewayMetrics
from lab.gateway.openai_body import parse_body
from lab.gateway.proxy import Proxy
from lab.gateway.queue import AdmissionQueue, QueueTimeout
from lab.gateway.router import LeastOutstandingWork, Router
from lab.gateway.traffic import Event, ReplicaState, Traffic


class Gateway:
    """Everything one app shares: config, keys, buckets, queue, traffic, router, canary, metrics."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float], uniform: Callable[[], float],
                 router: Router, transport: httpx.AsyncBaseTransport | None) -> None:
        self.config, self.clock = config, clock
        self.keys = KeyStore(config.keys)
        self.limiter = RateLimiter(config.tiers, clock)
        self.queue = AdmissionQueue(config.tiers, config.queue.max_inflight, clock)
        self.traffic = Traffic.from_config(config)
        self.canary = CanaryController(self.traffic, config.canary, clock)
        self.metrics = GatewayMetrics(self.traffic, self.queue.core, [t.name for t in config.tiers])
        self.client = httpx.AsyncClient(transport=transport, limits=httpx.Limits(
            max_connections=max(1000, 4 * config.queue.max_inflight), max_keepalive_connections=256))
        self.proxy = Proxy(self.client, self.traffic, router, config.proxy, uniform, on_retry=self._failed_attempt)
        self.health = HealthChecker(self.traffic, config.health, self.client, self.canary, clock)
        self.traffic.listeners.append(self._on_event)

    def _failed_attempt(self, replica: ReplicaState, failure: str) -> None:
        self.metrics.retries.labels(replica.name).inc()
        self.canary.record(replica.version, ok=False, latency_s=0.0)  # a failing canary is an erring canary

    def _on_event(self, event: Event) -> None:
        if event.kind == "ejected":
            self.metrics.ejections.labels(event.replica, event.version).inc()
        elif event.kind in ("rollback", "canary_abort"):  # automatic ones; an operator's abort is not counted
            self.metrics.rollbacks.inc()

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.proxy.max_body_bytes
        too_large = GatewayError(413, f"request body is larger than the gateway's limit of {limit} bytes",
                                 "invalid_request_error", "request_too_large")
        if int(request.headers.get("content-length") or 0) > limit:
            raise too_large
        body = bytearray()
        async for part in request.stream():  # counted as it comes: a missing content-length cannot sneak past
            body += part
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def forward(self, request: Request, path: str) -> Response:
        arrived = self.clock()
        key = self.keys.lookup(bearer_token(request.headers))
        if key is None:
            raise unauthorized()
        tier = self.config.tier(key.tier)
        try:
            raw = await self._read_body(request)
        except ClientDisconnect:
            return Response(status_code=499)  # the client left before sending its body: nobody to answer
        parsed = parse_body(raw, self.config.queue.default_max_tokens)
        admission = self.limiter.admit(key, parsed.token_cost)
        if not admission.admitted:
            self.metrics.shed.labels(tier.name, admission.bucket).inc()
            if math.isinf(admission.retry_after_s):
                raise GatewayError(429, f"request of ~{parsed.token_cost} tokens exceeds the {admission.bucket} burst "
                                        f"of tier {tier.name!r}; lower max_tokens or the prompt", "rate_limit_error",
                                   "request_too_large", tier=tier.name)
            retry_after = max(1, math.ceil(admission.retry_after_s))
            raise GatewayError(429, f"rate limit of tier {tier.name!r} reached ({admission.bucket}); retry in "
                                    f"{admission.retry_after_s * 1000:.0f} ms", "rate_limit_error", "rate_limited",
                               headers={"Retry-After": str(retry_after)}, tier=tier.name,
                               retry_after_s=round(admission.retry_after_s, 3))
        try:
            ticket = await self.queue.acquire(tier.name)
        except QueueTimeout as timeout:
            self.metrics.timed_out.labels(tier.name).inc()
            raise GatewayError(504, str(timeout), "timeout_error", "queue_timeout", tier=tier.name,
                               waited_ms=round(timeout.waited_ms, 1), timeout_ms=timeout.timeout_ms) from None
        self.metrics.admitted.labels(tier.name).inc()
        self.metrics.queue_wait.labels(tier.name).observe(self.clock() - arrived)
        try:
            upstream = await self.proxy.open(path, parsed, tier.priority)
        except BaseException as error:
            self.queue.release(ticket)
            if isinstance(error, GatewayError):
                self.metrics.requests.labels(tier.name, "", "error").inc()
            raise
        done = False

        async def finish(outcome: str) -> None:  # ok | error (the replica broke) | client_closed
            nonlocal done
            if done:
                return
            done = True
            # Bookkeeping first and without awaiting: when the client leaves, this runs inside a
            # cancelled scope, where any await would be interrupted.
            self.queue.release(ticket)
            upstream.reservation.close()
            latency_s = self.clock() - arrived
            if outcome == "ok" and upstream.response.status_code >= 400:
                outcome = "client_error"  # the replica refused the request itself: not the replica's failure
            self.metrics.requests.labels(tier.name, upstream.replica.version, outcome).inc()
            if outcome in ("ok", "error"):
                self.metrics.latency.labels(tier.name).observe(latency_s)
                self.canary.record(upstream.replica.version, ok=outcome == "ok", latency_s=latency_s)
            with anyio.CancelScope(shield=True):  # closing the upstream connection aborts the replica's work
                await upstream.response.aclose()

        async def relay() -> AsyncIterator[bytes]:
            outcome, first = "client_closed", True  # unless the stream ends or the replica breaks
            try:
                async for chunk in upstream.response.aiter_raw():  # as they arrive: no buffering
                    if first:
                        first = False
                        self.metrics.ttfb.labels(tier.name).observe(self.clock() - arrived)
                    yield chunk
                outcome = "ok"
            except httpx.HTTPError as error:
                # The replica broke mid-response; nothing can be retried once bytes went out. Say so:
                # an SSE stream gets an error event (the openai SDK raises it), a JSON body is cut off.
                outcome = "error"
                if not upstream.response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise
                message = f"replica {upstream.replica.name!r} failed mid-stream: {type(error).__name__}"
                yield b"data: " + json.dumps({"error": {"message": message, "type": "upstream_error",
                                                        "code": "upstream_broke", "param": None}}).encode() + b"\n\n"
            finally:
                await finish(outcome)

        return StreamingResponse(relay(), status_code=upstream.response.status_code, headers=upstream.headers(),
                                 background=BackgroundTask(finish, "client_closed"))


def build_app(config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
              uniform: Callable[[], float] | None = None, router: Router | None = None,
              transport: httpx.AsyncBaseTransport | None = None, run_health: bool = True) -> FastAPI:
    gateway = Gateway(config, clock, uniform or random.Random().random, router or LeastOutstandingWork(), transport)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(gateway.health.run()) if run_health and config.health.interval_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await gateway.client.aclose()

    app = FastAPI(title="lab gateway", lifespan=lifespan)
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        return error.to_response()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await gateway.forward(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await gateway.forward(request, "/v1/chat/completions")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if gateway.keys.lookup(bearer_token(request.headers)) is None:
            raise unauthorized()
        version = gateway.traffic.choose_version(0.0)
        replica = gateway.proxy.router.pick(gateway.traffic.of_version(version)) if version else None
        if replica is None:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        reply = await gateway.client.get(replica.config.url + "/v1/models", timeout=gateway.proxy.timeout)
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        healthy = sum(r.healthy for r in gateway.traffic.replicas.values())
        return JSONResponse({"ready": healthy > 0, "healthy_replicas": healthy}, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(admin_router(gateway))
    return app
