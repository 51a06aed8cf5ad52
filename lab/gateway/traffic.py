"""Run-time traffic state: replicas (health, outstanding work), version weights, canary, events.

Contract: `Traffic` is the one mutable object the router, the health loop, the canary controller
and the admin endpoints share; the frozen config only seeds it. Version weights are percents of
new requests (`weights[version]`, summing to 100 over versions that carry traffic);
`choose_version(u)` maps a uniform draw `u` in [0, 1) to a version, skipping versions with no
healthy replica (traffic follows health before any rollback decision is taken). Every state change
that an operator should hear about is appended to `events` and logged on `lab.gateway`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lab.gateway.config import GatewayConfig, ReplicaConfig

log = logging.getLogger("lab.gateway")
TIMEOUT_PREFIX = "timeout:"  # how the request path names a timeout (lab.gateway.proxy, lab.gateway.health)


@dataclass
class ReplicaState:
    config: ReplicaConfig
    healthy: bool = True  # optimistic at start: the first probes eject a dead replica within N intervals
    consecutive_failures: int = 0  # failed probes in a row
    consecutive_upstream_failures: int = 0  # requests in a row that timed out or could not connect (passive)
    answers: int = 0  # answers seen from it (requests' first bytes, passing probes), to tell busy from hung
    outstanding_requests: int = 0
    outstanding_tokens: float = 0.0
    last_error: str = ""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # ejected, readmitted, rollback, canary_start, canary_ramp, canary_abort, canary_promote, ...
    message: str
    replica: str = ""
    version: str = ""


@dataclass
class CanaryRun:
    version: str
    step: int  # index into CanaryConfig.steps, or -1 for a custom first percent
    percent: float
    started_at: float  # start of the current observation window


@dataclass
class Traffic:
    replicas: dict[str, ReplicaState]
    stable: str
    weights: dict[str, float]
    previous: str | None = None  # the stable version before the last promotion: where rollback goes
    canary: CanaryRun | None = None
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=200))
    listeners: list[Callable[[Event], None]] = field(default_factory=list)  # e.g. metrics counters

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Traffic:
        replicas = {r.name: ReplicaState(r) for r in config.replicas}
        return cls(replicas, config.stable_version, {config.stable_version: 100.0} if config.stable_version else {})

    def say(self, at: float, kind: str, message: str, replica: str = "", version: str = "") -> None:
        event = Event(at, kind, message, replica, version)
        self.events.append(event)
        log.warning("%s: %s", kind, message)
        for listener in self.listeners:
            listener(event)

    def versions(self) -> list[str]:
        return sorted({r.version for r in self.replicas.values()} | set(self.weights))

    def of_version(self, version: str, healthy_only: bool = True) -> list[ReplicaState]:
        return [r for r in self.replicas.values() if r.version == version and (r.healthy or not healthy_only)]

    def choose_version(self, u: float) -> str | None:
        live = [(v, w) for v, w in sorted(self.weights.items()) if w > 0 and self.of_version(v)]
        total = sum(w for _, w in live)
        if total > 0:
            point = u * total
            for version, weight in live:
                if point < weight:
                    return version
                point -= weight
            return live[-1][0]
        # No weighted version is healthy: any healthy replica beats an error; stable first.
        for version in [self.stable, *([self.previous] if self.previous else []), *self.versions()]:
            if self.of_version(version):
                return version
        return None

    def set_weights(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - {r.version for r in self.replicas.values()}
        if unknown:
            raise ValueError(f"no replica serves version(s) {sorted(unknown)}; known: {self.versions()}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        total = sum(weights.values())
        self.weights = {v: 100.0 * w / total for v, w in weights.items() if w > 0}

    def add_replica(self, config: ReplicaConfig) -> ReplicaState:
        if config.name in self.replicas:
            raise ValueError(f"replica {config.name!r} already exists")
        self.replicas[config.name] = state = ReplicaState(config)
        if not self.weights:
            self.stable, self.weights = config.version, {config.version: 100.0}
        return state

    def remove_replica(self, name: str) -> ReplicaState:
        try:
            return self.replicas.pop(name)
        except KeyError:
            raise ValueError(f"no replica named {name!r}; known: {sorted(self.replicas)}") from None

    def snapshot(self) -> dict:
        return {
            "stable": self.stable,
            "previous": self.previous,
            "weights": dict(self.weights),
            "canary": asdict(self.canary) if self.canary else None,
            "versions": {v: {"replicas": [r.name for r in self.of_version(v, healthy_only=False)],
                             "healthy": len(self.of_version(v)), "weight": self.weights.get(v, 0.0)}
                         for v in self.versions()},
            "replicas": [{"name": r.name, "url": r.config.url, "version": r.version, "weight": r.config.weight,
                          "healthy": r.healthy, "consecutive_failures": r.consecutive_failures,
                          "consecutive_upstream_failures": r.consecutive_upstream_failures,
                          "outstanding_requests": r.outstanding_requests,
                          "outstanding_tokens": r.outstanding_tokens, "last_error": r.last_error}
                         for r in self.replicas.values()],
            "events": [asdict(e) for e in self.events],
        }
