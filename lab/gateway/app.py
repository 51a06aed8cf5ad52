"""The gateway as an ASGI app: the request path from key to replica and back.

Contract: `build_app(config)` returns a `GatewayApp`, an ASGI app serving `/v1/completions` and
`/v1/chat/completions` (forwarded by `lab.gateway.forward`, on the bare ASGI interface: the hot
path), and, through FastAPI, `/v1/models`, `/health` (alive), `/ready` (some replica is healthy),
`/metrics` and the admin endpoints (`lab.gateway.admin`). `app.state.gateway` is the shared
`Gateway`. A forwarded request goes: key -> tier (401 without a valid key; a request with no key at
all takes `anonymous_tier` when the config names one) -> token buckets (429 + Retry-After) -> priority
queue (504 with tier and waited_ms past the tier's timeout; a lower tier's running request may be
preempted for it) -> replica over its connection pool, within its tier's time budgets (502/503 when
none answers) -> the replica's bytes, streamed as they arrive. Its slot and outstanding work are given
back when the response ends, however it ends (`Gateway.finish`). Everything with a clock or randomness takes it as an argument
(`clock`, `uniform`), and the health loop can be left off (`run_health=False`) so tests drive rounds
themselves; there is no module state, so several apps can live in one process. An error the app did
not foresee is a 500 in OpenAI's error shape, never a plain-text page.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lab.gateway.admin import admin_router
from lab.gateway.auth import KeyStore, bearer_token
from lab.gateway.buckets import RateLimiter
from lab.gateway.budget import budget_of
from lab.gateway.canary import CanaryController
from lab.gateway.config import GatewayConfig
from lab.gateway.errors import GatewayError, unauthorized
from lab.gateway.forward import FORWARDED, Forwarder
from lab.gateway.health import HealthChecker
from lab.gateway.key_checks import KeyChecks
from lab.gateway.metrics import GatewayMetrics
from lab.gateway.connection_pools import UpstreamPools
from lab.gateway.proxy import Proxy, Upstream
from lab.gateway.queue import AdmissionQueue, Ticket
from lab.gateway.router import LeastOutstandingWork, Router
from lab.gateway.traffic import Event, ReplicaState, Traffic
from lab.gateway.upstream_http import HttpPools


class Gateway:
    """Everything one app shares: config, keys, buckets, queue, traffic, router, canary, metrics, pools."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float], uniform: Callable[[], float],
                 router: Router) -> None:
        self.config, self.clock = config, clock
        self.keys = KeyStore(config.keys, anonymous_tier=config.anonymous_tier)
        self.key_checks = KeyChecks(self.keys)
        self.budgets = {t.name: budget_of(t, config.proxy) for t in config.tiers}
        self.limiter = RateLimiter(config.tiers, clock)
        self.queue = AdmissionQueue(config.tiers, config.queue.max_inflight, clock)
        self.traffic = Traffic.from_config(config)
        self.canary = CanaryController(self.traffic, config.canary, clock)
        self.metrics = GatewayMetrics(self.traffic, self.queue.core, [t.name for t in config.tiers])
        pools = HttpPools if config.proxy.client == "lab" else UpstreamPools
        self.pools = pools(config.proxy, max_connections=max(100, 2 * config.queue.max_inflight))
        self.proxy = Proxy(self.pools, self.traffic, router, config.proxy, uniform, on_retry=self._failed_attempt,
                           on_upstream=lambda replica, failure: self.health.record_request(replica, failure))
        # Probes, model listings: the cold path, on httpx.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(config.proxy.read_timeout_s,
                                                              connect=config.proxy.connect_timeout_s))
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

    def finish(self, tier: str, ticket: Ticket | None, upstream: Upstream | None, outcome: str, arrived: float) -> None:
        """Give back the slot and the outstanding work, count the outcome, close or reuse the connection.

        Synchronous on purpose: when the client leaves, this runs in a cancelled task, where an await
        could be interrupted. `outcome`: ok | error (the replica broke or none answered) |
        client_closed | preempted, or "" for a request refused before it reached the queue's end.
        """
        if ticket is not None:
            self.queue.release(ticket)
        if outcome == "preempted":
            self.metrics.tier[tier].preempted.inc()
            if ticket is not None and ticket.borrowed:
                self.metrics.tier[tier].reclaimed.inc()
        if upstream is None:
            if outcome in ("error", "preempted"):
                self.metrics.count_request(tier, "", outcome)
            return
        upstream.reservation.close()
        latency_s = self.clock() - arrived
        if outcome == "ok" and upstream.status >= 400:
            outcome = "client_error"  # the replica refused the request itself: not the replica's failure
        self.metrics.count_request(tier, upstream.replica.version, outcome)
        if outcome in ("ok", "error"):
            self.metrics.tier[tier].latency.observe(latency_s)
            self.canary.record(upstream.replica.version, ok=outcome == "ok", latency_s=latency_s)
        upstream.close(reusable=outcome in ("ok", "client_error"))  # dropping it aborts the replica's work


class GatewayApp:
    """The ASGI app: the forwarded routes straight to `Forwarder`, every other scope to FastAPI."""

    def __init__(self, forwarder: Forwarder, fallback: FastAPI) -> None:
        self.forwarder, self.fallback = forwarder, fallback
        self.state = fallback.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in FORWARDED:
            await self.forwarder(scope, receive, send)
        else:
            await self.fallback(scope, receive, send)


def build_app(config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
              uniform: Callable[[], float] | None = None, router: Router | None = None,
              run_health: bool = True) -> GatewayApp:
    gateway = Gateway(config, clock, uniform or random.Random().random, router or LeastOutstandingWork())

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
            await gateway.pools.close()
            gateway.key_checks.close()

    app = FastAPI(title="lab gateway", lifespan=lifespan)
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        return error.to_response()

    @app.exception_handler(Exception)
    async def _unforeseen(request: Request, error: Exception) -> JSONResponse:
        return GatewayError(500, f"the gateway failed on this request: {type(error).__name__}", "internal_server_error",
                            "internal_error").to_response()

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if await gateway.key_checks.lookup(bearer_token(request.headers)) is None:
            raise unauthorized()
        version = gateway.traffic.choose_version(0.0)
        replica = gateway.proxy.router.pick(gateway.traffic.of_version(version)) if version else None
        if replica is None:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        try:
            reply = await gateway.client.get(replica.config.url + "/v1/models", timeout=config.health.probe_timeout_s)
        except httpx.HTTPError as error:
            raise GatewayError(502, f"replica {replica.name!r} did not list its models: {type(error).__name__}",
                               "upstream_error", "upstream_failed") from None
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
    return GatewayApp(Forwarder(gateway), app)
