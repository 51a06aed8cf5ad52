"""Forwarding to replicas: pick, send, retry before the first byte, stream back unbuffered.

Contract: `Proxy.open(path, request, tier_priority, budget)` chooses a version by the traffic weights,
picks a replica with the router, and POSTs the request over that replica's connection pool
(`lab.gateway.upstream_http`; aiohttp's `lab.gateway.connection_pools` with `proxy.client: aiohttp`), returning
once the replica's first body bytes are in: a small non-streaming answer whole (`Upstream.body`), else
its first chunk (`Upstream.first_chunk`; a stream's first event), both within the tier's first-byte
budget (`lab.gateway.budget`). A connection error, that budget running out, or a 5xx status before any
body byte counts as a failure of that replica: the attempt is dropped (closing its connection, so the
replica aborts) and another replica is tried (same version first, then any healthy one), up to
`ProxyConfig.max_attempts`. A 4xx is the request's own fault: it goes back to the client as the replica
sent it, and is never retried nor held against the replica. Timeouts and connection failures (not 5xx,
which a request's own input can cause) are reported to `on_upstream(replica, failure)` for passive
health, a timeout only when the replica answered nothing else meanwhile (`ReplicaState.answers`); an
answer of any status reports `failure=None`. The returned `Upstream` holds the open response,
whose remaining body the app forwards chunk by chunk as it arrives (`next_chunk()`, each within the
stall budget), and the `Reservation` of outstanding work, closed when the response ends (or at once, if
`open` itself fails or is cancelled).
`NoHealthyReplica` (503) and `UpstreamFailed` (502) are `GatewayError`s naming what was tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from lab.gateway.budget import UpstreamBudget
from lab.gateway.config import ProxyConfig
from lab.gateway.errors import GatewayError
from lab.gateway.openai_body import ClientRequest, for_replica
from lab.gateway.connection_pools import UpstreamPools
from lab.gateway.router import Reservation, Router
from lab.gateway.traffic import TIMEOUT_PREFIX, ReplicaState, Traffic
from lab.gateway.upstream_http import HttpPools, HttpResponse, ReplicaPool, UpstreamError

# Hop-by-hop and length headers are the gateway's own business on each leg.
_DROP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"content-encoding",
                 b"server", b"date"}
_REQUEST_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}
# What a broken or silent replica raises, with either client.
UPSTREAM_ERRORS = (aiohttp.ClientError, UpstreamError, asyncio.TimeoutError)
WHOLE_BODY_MAX_BYTES = 1 << 20  # a non-streaming answer up to this size is read whole, forwarded in one write


@dataclass
class Upstream:
    response: aiohttp.ClientResponse | HttpResponse
    replica: ReplicaState
    reservation: Reservation
    attempts: int
    stall_s: float  # longest wait for the next chunk
    body: bytes | None = None  # the whole answer, when it was read whole
    first_chunk: bytes = b""  # otherwise the first bytes of the body (b"": it was empty)

    def __post_init__(self) -> None:
        if isinstance(self.response, HttpResponse):  # its own per-read timer: no second one per chunk
            self.response.read_timeout_s, self.response.deadline = self.stall_s, None

    async def next_chunk(self) -> bytes:
        """The body's next bytes as they arrive, b"" at its end; `asyncio.TimeoutError` after `stall_s` of silence."""
        if isinstance(self.response, HttpResponse):
            return await self.response.readany()  # its own timer, set to stall_s above
        async with asyncio.timeout(self.stall_s):
            return await self.response.content.readany()

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def is_event_stream(self) -> bool:
        return _is_event_stream(self.response)

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
                 uniform: Callable[[], float], on_retry: Callable[[ReplicaState, str], None] | None = None,
                 on_upstream: Callable[[ReplicaState, str | None], None] | None = None) -> None:
        self.pools, self.traffic, self.router, self.config = pools, traffic, router, config
        self._uniform, self._on_retry = uniform, on_retry
        self._on_upstream = on_upstream or (lambda replica, failure: None)

    def _candidates(self, version: str, tried: set[str]) -> list[ReplicaState]:
        same = [r for r in self.traffic.of_version(version) if r.name not in tried]
        if same:
            return same
        return [r for r in self.traffic.replicas.values() if r.healthy and r.name not in tried]

    async def open(self, path: str, request: ClientRequest, priority: int, budget: UpstreamBudget) -> Upstream:
        version = self.traffic.choose_version(self._uniform())
        if version is None:
            raise GatewayError(503, "no healthy replica is available", "service_unavailable", "no_healthy_replica")
        first_byte_s = budget.first_byte_s_for(request.stream, request.max_tokens)
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
            response, answers_before = None, replica.answers
            try:
                if isinstance(session, ReplicaPool):  # the budget rides on the response's own read timer
                    deadline = asyncio.get_running_loop().time() + first_byte_s
                    response = await session.post(replica.config.url + path, body, _REQUEST_HEADERS, deadline)
                    whole, first_chunk = await _first_bytes(response) if response.status < 500 else (None, b"")
                else:
                    async with asyncio.timeout(first_byte_s):
                        response = await session.post(replica.config.url + path, data=body, headers=_REQUEST_HEADERS)
                        whole, first_chunk = await _first_bytes(response) if response.status < 500 else (None, b"")
            except UPSTREAM_ERRORS as error:
                timed_out = isinstance(error, asyncio.TimeoutError)
                if timed_out:
                    failure = f"{TIMEOUT_PREFIX} {replica.name} gave no first byte within the tier's budget ({first_byte_s:g} s)"
                else:
                    failure = f"{replica.name}: {type(error).__name__}: {error}"
                if response is not None:
                    response.close()
                if not timed_out or replica.answers == answers_before:  # it answered others: busy, not hung
                    self._on_upstream(replica, failure)
            except BaseException:  # cancelled (client gone, preempted): the work was never added
                if response is not None:
                    response.close()
                reservation.close()
                raise
            else:
                self._on_upstream(replica, None)  # it answered: alive, whatever the status says of the request
                if response.status < 500:
                    return Upstream(response, replica, reservation, attempt, budget.stall_s, whole, first_chunk)
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


async def _first_bytes(response: aiohttp.ClientResponse | HttpResponse) -> tuple[bytes | None, bytes]:
    """(the whole answer, b"") for a small non-streaming answer, else (None, the body's first chunk)."""
    length = response.content_length
    if not _is_event_stream(response) and length is not None and length <= WHOLE_BODY_MAX_BYTES:
        return await response.read(), b""
    return None, await response.content.readany()


def _is_event_stream(response: aiohttp.ClientResponse | HttpResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")
