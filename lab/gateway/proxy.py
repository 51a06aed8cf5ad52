"""Forwarding to replicas: pick, send, retry before the first byte, stream back unbuffered.

Contract: `Proxy.open(path, request, tier_priority)` chooses a version by the traffic weights,
picks a replica with the router, and POSTs the request over that replica's connection pool
(`lab.gateway.upstream_http`; aiohttp's `lab.gateway.connection_pools` with `proxy.client: aiohttp`), returning
as soon as the response headers are in. A connection error, a timeout or a 5xx status before any
body byte counts as a failure of that replica: the attempt is dropped and another replica is tried
(same version first, then any healthy one), up to `ProxyConfig.max_attempts`. The returned
`Upstream` holds the open response, whose body the app forwards chunk by chunk as it arrives (SSE
included), and the `Reservation` of outstanding work, closed when the response ends (or at once, if
`open` itself fails or is cancelled).
`NoHealthyReplica` (503) and `UpstreamFailed` (502) are `GatewayError`s naming what was tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from lab.gateway.config import ProxyConfig
from lab.gateway.errors import GatewayError
from lab.gateway.openai_body import ClientRequest, for_replica
from lab.gateway.connection_pools import UpstreamPools
from lab.gateway.router import Reservation, Router
from lab.gateway.traffic import ReplicaState, Traffic
from lab.gateway.upstream_http import HttpPools, HttpResponse, UpstreamError

# Hop-by-hop and length headers are the gateway's own business on each leg.
_DROP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"content-encoding",
                 b"server", b"date"}
_REQUEST_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}
# What a broken or silent replica raises, with either client.
UPSTREAM_ERRORS = (aiohttp.ClientError, UpstreamError, asyncio.TimeoutError)


@dataclass
class Upstream:
    response: aiohttp.ClientResponse | HttpResponse
    replica: ReplicaState
    reservation: Reservation
    attempts: int

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def is_event_stream(self) -> bool:
        return self.response.headers.get("content-type", "").startswith("text/event-stream")

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The replica's headers for the client, as ASGI pairs, plus `x-lab-replica`."""
        kept = [(name.lower(), value) for name, value in self.response.raw_headers if name.lower() not in _DROP_HEADERS]
        kept.append((b"x-lab-replica", self.replica.name.encode()))
        return kept

    def close(self, reusable: bool) -> None:
        """Hand the connection back to the pool (`reusable`: the body was read to its end) or drop it;
        dropping it is what tells the replica to abort the request and free its KV."""
        if reusable:
            self.response.release()
        else:
            self.response.close()


class Proxy:
    def __init__(self, pools: UpstreamPools | HttpPools, traffic: Traffic, router: Router, config: ProxyConfig,
                 uniform: Callable[[], float], on_retry: Callable[[ReplicaState, str], None] | None = None) -> None:
        self.pools, self.traffic, self.router, self.config = pools, traffic, router, config
        self._uniform, self._on_retry = uniform, on_retry

    def _candidates(self, version: str, tried: set[str]) -> list[ReplicaState]:
        same = [r for r in self.traffic.of_version(version) if r.name not in tried]
        if same:
            return same
        return [r for r in self.traffic.replicas.values() if r.healthy and r.name not in tried]

    async def open(self, path: str, request: ClientRequest, priority: int) -> Upstream:
        version = self.traffic.choose_version(self._uniform())
        if version is None:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        tried: set[str] = set()
        failures: list[str] = []
        for attempt in range(1, self.config.max_attempts + 1):
            replica = self.router.pick(self._candidates(version, tried))
            if replica is None:
                break
            tried.add(replica.name)
            reservation = Reservation(replica, request.token_cost)
            session = self.pools.session(replica.config.url)
            body = for_replica(request, priority, replica.config.model)
            try:
                response = await session.post(replica.config.url + path, data=body, headers=_REQUEST_HEADERS)
            except UPSTREAM_ERRORS as error:
                failure = f"{replica.name}: {type(error).__name__}: {error}"
            except BaseException:  # cancelled (client gone, preempted): the work was never added
                reservation.close()
                raise
            else:
                if response.status < 500:
                    return Upstream(response, replica, reservation, attempt)
                failure = f"{replica.name}: HTTP {response.status}"
                response.close()
            reservation.close()
            replica.last_error = failure
            failures.append(failure)
            if self._on_retry is not None:
                self._on_retry(replica, failure)
        if not failures:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        raise GatewayError(502, f"every replica tried failed before responding: {'; '.join(failures)}",
                           "upstream_error", "upstream_failed", attempts=len(failures))
