"""Forwarding to replicas: pick, send, retry before the first byte, stream back unbuffered.

Contract: `Proxy.open(path, request, tier_priority)` chooses a version by the traffic weights,
picks a replica with the router, and sends the request with `stream=True`. A connection error,
a timeout or a 5xx status before any body byte counts as a failure of that replica: the attempt
is dropped and another replica is tried (same version first, then any healthy one), up to
`ProxyConfig.max_attempts`. The returned `Upstream` holds the open response, whose raw bytes the
app forwards chunk by chunk as they arrive (SSE included), and the `Reservation` of outstanding
work, closed when the response ends. `NoHealthyReplica` (503) and `UpstreamFailed` (502) are
`GatewayError`s naming what was tried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from lab.gateway.config import ProxyConfig
from lab.gateway.errors import GatewayError
from lab.gateway.openai_body import ClientRequest, for_replica
from lab.gateway.router import Reservation, Router
from lab.gateway.traffic import ReplicaState, Traffic

# Hop-by-hop and length headers are the gateway's own business on each leg.
_DROP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}


@dataclass
class Upstream:
    response: httpx.Response
    replica: ReplicaState
    reservation: Reservation
    attempts: int

    def headers(self) -> dict[str, str]:
        kept = {k: v for k, v in self.response.headers.items() if k.lower() not in _DROP_HEADERS}
        kept["x-lab-replica"] = self.replica.name
        return kept



class Proxy:
    def __init__(self, client: httpx.AsyncClient, traffic: Traffic, router: Router, config: ProxyConfig,
                 uniform: Callable[[], float], on_retry: Callable[[ReplicaState, str], None] | None = None) -> None:
        self.client, self.traffic, self.router, self.config = client, traffic, router, config
        self._uniform, self._on_retry = uniform, on_retry
        self.timeout = httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s)

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
            outgoing = self.client.build_request(
                "POST", replica.config.url + path, content=for_replica(request.body, priority, replica.config.model),
                headers={"content-type": "application/json", "accept-encoding": "identity"}, timeout=self.timeout)
            try:
                response = await self.client.send(outgoing, stream=True)
            except httpx.HTTPError as error:
                failure = f"{replica.name}: {type(error).__name__}: {error}"
            else:
                if response.status_code < 500:
                    return Upstream(response, replica, reservation, attempt)
                failure = f"{replica.name}: HTTP {response.status_code}"
                await response.aclose()
            reservation.close()
            replica.last_error = failure
            failures.append(failure)
            if self._on_retry is not None:
                self._on_retry(replica, failure)
        if not failures:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        raise GatewayError(502, f"every replica tried failed before responding: {'; '.join(failures)}",
                           "upstream_error", "upstream_failed", attempts=len(failures))
