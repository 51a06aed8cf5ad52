"""Canary releases: compare a new version with the stable one over a window, then ramp or abort.

Contract: `VersionStats` collects outcomes (ok or error, latency) of one version in the current
window. `judge(canary, stable, config, window_elapsed)` is the pure decision: `abort` as soon as
the canary has `min_requests` outcomes and its error rate exceeds stable's by more than
`error_rate_margin` or its p99 latency exceeds stable's by more than `latency_margin` (a fraction);
`ramp` when the window has elapsed with enough requests and neither margin is broken; otherwise
`wait`. `CanaryController` applies verdicts to `Traffic`: start at `percent`, step through
`steps` (1 -> 5 -> 25 -> 50 -> 100 by default), promote at 100 (the old stable becomes `previous`,
the rollback target), or abort (all traffic back to stable).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.gateway.config import CanaryConfig
from lab.gateway.traffic import CanaryRun, Traffic


@dataclass
class VersionStats:
    requests: int = 0
    errors: int = 0
    # The most recent successes only: a bounded sample keeps a 30-minute window at 500 req/s small.
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def record(self, ok: bool, latency_s: float) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        if ok:
            self.latencies_s.append(latency_s)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99_s(self) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]  # nearest rank


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | ramp | abort
    reason: str


def judge(canary: VersionStats, stable: VersionStats, config: CanaryConfig, window_elapsed: bool) -> Verdict:
    if canary.requests < config.min_requests:
        return Verdict("wait", f"{canary.requests} of {config.min_requests} canary requests seen")
    if canary.error_rate > stable.error_rate + config.error_rate_margin:
        return Verdict("abort", f"canary error rate {canary.error_rate:.3f} > stable {stable.error_rate:.3f} "
                                f"+ margin {config.error_rate_margin}")
    if stable.latencies_s and canary.p99_s() > stable.p99_s() * (1.0 + config.latency_margin):
        return Verdict("abort", f"canary p99 {canary.p99_s() * 1000:.0f} ms > stable {stable.p99_s() * 1000:.0f} ms "
                                f"x (1 + {config.latency_margin})")
    if not window_elapsed:
        return Verdict("wait", "window still open")
    return Verdict("ramp", f"error rate {canary.error_rate:.3f}, p99 {canary.p99_s() * 1000:.0f} ms within margins")


def next_percent(current: float, steps: tuple[float, ...]) -> float:
    """The first step above `current` (100 when none is)."""
    return next((s for s in steps if s > current), 100.0)


class CanaryController:
    def __init__(self, traffic: Traffic, config: CanaryConfig, clock: Callable[[], float]) -> None:
        self.traffic, self.config, self._clock = traffic, config, clock
        self.stats: dict[str, VersionStats] = {}

    def record(self, version: str, ok: bool, latency_s: float) -> None:
        self.stats.setdefault(version, VersionStats()).record(ok, latency_s)

    def start(self, version: str, percent: float | None = None) -> None:
        t = self.traffic
        if t.canary is not None:
            raise ValueError(f"a canary of {t.canary.version!r} is running; abort it first")
        if version == t.stable or not t.of_version(version, healthy_only=False):
            raise ValueError(f"cannot canary {version!r}: it is the stable version or has no replica")
        percent = self.config.percent if percent is None else percent
        t.canary = CanaryRun(version, 0, percent, self._clock())
        self._apply(percent)
        self.stats = {}
        t.say(self._clock(), "canary_start", f"canary of {version!r} at {percent}% (stable {t.stable!r})")

    def abort(self, reason: str, kind: str = "canary_abort") -> None:
        """All traffic back to stable; `kind` names the event (an operator's is `canary_abort_operator`)."""
        t = self.traffic
        if t.canary is None:
            raise ValueError("no canary is running")
        version, t.canary = t.canary.version, None
        t.weights = {t.stable: 100.0}
        t.say(self._clock(), kind, f"canary of {version!r} aborted: {reason}; 100% to {t.stable!r}")

    def tick(self) -> Verdict | None:
        """Judge the running canary once; the health loop calls this every interval."""
        t = self.traffic
        if t.canary is None:
            return None
        run = t.canary
        elapsed = self._clock() - run.started_at >= self.config.window_s
        verdict = judge(self.stats.get(run.version, VersionStats()), self.stats.get(t.stable, VersionStats()),
                        self.config, elapsed)
        if verdict.action == "abort":
            self.abort(verdict.reason)
        elif verdict.action == "ramp":
            self._ramp(verdict.reason)
        return verdict

    def _ramp(self, reason: str) -> None:
        t, run = self.traffic, self.traffic.canary
        assert run is not None
        percent = next_percent(run.percent, self.config.steps)
        if percent >= 100.0:
            t.previous, t.stable, t.canary = t.stable, run.version, None
            t.weights = {run.version: 100.0}
            t.say(self._clock(), "canary_promote", f"{run.version!r} promoted to stable ({reason}); "
                                                   f"rollback target {t.previous!r}")
        else:
            run.percent, run.started_at = percent, self._clock()
            self._apply(percent)
            t.say(self._clock(), "canary_ramp", f"canary of {run.version!r} ramped to {percent}% ({reason})")
        self.stats = {}  # each window judges fresh outcomes

    def _apply(self, percent: float) -> None:
        t = self.traffic
        assert t.canary is not None
        t.weights = {t.stable: 100.0 - percent, t.canary.version: percent}
