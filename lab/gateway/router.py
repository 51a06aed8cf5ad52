"""Routing: which replica of a version serves a request.

Contract: a `Router` picks one replica among candidates (healthy replicas of the chosen version,
minus those already tried for this request) or None. `LeastOutstandingWork` (the default) picks
the replica with the least outstanding work per unit of weight: estimated tokens in flight first,
outstanding requests as the tie-breaker, then the name so the choice is deterministic.
`RoundRobin` is the plain path beside it (and the oracle in tests). A new policy is a new class.
`Reservation` holds the work a request adds to its replica from pick to the end of its response.
"""

from __future__ import annotations

import itertools
from typing import Protocol

from lab.gateway.traffic import ReplicaState


class Router(Protocol):
    name: str

    def pick(self, candidates: list[ReplicaState]) -> ReplicaState | None: ...


class LeastOutstandingWork:
    name = "least_outstanding_work"

    def pick(self, candidates: list[ReplicaState]) -> ReplicaState | None:
        if not candidates:
            return None
        return min(candidates, key=lambda r: (r.outstanding_tokens / r.config.weight,
                                              r.outstanding_requests / r.config.weight, r.name))


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: list[ReplicaState]) -> ReplicaState | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda r: r.name)
        return ordered[next(self._turn) % len(ordered)]


ROUTERS = {LeastOutstandingWork.name: LeastOutstandingWork, RoundRobin.name: RoundRobin}


class Reservation:
    """A request's share of a replica's outstanding work; `close()` is idempotent."""

    def __init__(self, replica: ReplicaState, tokens: float) -> None:
        self.replica, self.tokens, self._open = replica, tokens, True
        replica.outstanding_requests += 1
        replica.outstanding_tokens += tokens

    def close(self) -> None:
        if self._open:
            self._open = False
            self.replica.outstanding_requests -= 1
            self.replica.outstanding_tokens -= self.tokens
