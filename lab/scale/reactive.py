"""Reactive threshold scaling, as Kubernetes HPA or Knative KPA do it: act after the fact.

Contract: `ReactiveThreshold.decide` watches the concurrency utilization ((running + queued) over
the ready replicas' slots). When it stays above `scale_up_utilization` for `decision_delay_s`
(metric scrape + sync period + stabilisation: the 15-30 s the article calls "late"), it asks for
enough replicas to bring demand to `target_utilization`, at most `max_step_factor` times the
provisioned count per decision (HPA's 100 %-per-period limit); when it stays below
`scale_down_utilization` for the delay and the scale-down cool-down has passed, it shrinks to the
largest need seen over that cool-down window (HPA's stabilisation window). After each change the
condition must hold for a full delay again. Starting replicas count as provisioned, so the policy
does not order again while they boot.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from lab.scale.policy import Bounds, CooldownConfig, CooldownPolicy
from lab.scale.signals import Action, LoadSignals, ScalingDecision


@dataclass(frozen=True)
class ReactiveConfig:
    decision_delay_s: float = 15.0
    scale_up_utilization: float = 0.85
    scale_down_utilization: float = 0.5
    target_utilization: float = 0.7
    max_step_factor: float = 2.0
    bounds: Bounds = field(default_factory=Bounds)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)

    def __post_init__(self) -> None:
        if self.decision_delay_s < 0:
            raise ValueError("decision_delay_s must be >= 0")
        if not 0 < self.scale_down_utilization < self.target_utilization < self.scale_up_utilization:
            raise ValueError("need 0 < scale_down_utilization < target_utilization < scale_up_utilization")
        if self.max_step_factor <= 1:
            raise ValueError("max_step_factor must be > 1")


class ReactiveThreshold(CooldownPolicy[ReactiveConfig]):
    def __init__(self, config: ReactiveConfig | None = None, name: str | None = None) -> None:
        config = config or ReactiveConfig()
        super().__init__(config, name or f"reactive_{config.decision_delay_s:g}s")
        self._above_since: float | None = None
        self._below_since: float | None = None
        # (time, needed) with decreasing needed: the max over the scale-down window in O(1).
        self._recent_needed: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        super().reset()
        self._above_since = self._below_since = None
        self._recent_needed.clear()

    def _window_max_needed(self, now: float, needed: int) -> int:
        """Largest recommendation of the scale-down window (HPA's stabilisation: no flapping)."""
        recent = self._recent_needed
        while recent and recent[-1][1] <= needed:
            recent.pop()
        recent.append((now, needed))
        while recent[0][0] < now - self.config.cooldown.scale_down_cooldown_s:
            recent.popleft()
        return recent[0][1]

    def _needed(self, signals: LoadSignals) -> int:
        demand = signals.running_requests + signals.queue_length
        return math.ceil(demand / (signals.replica_slots * self.config.target_utilization) - 1e-9)

    def decide(self, s: LoadSignals) -> ScalingDecision:
        cfg, now, current = self.config, s.time_s, s.provisioned_replicas
        util = s.concurrency_utilization
        needed = self._needed(s)
        stable_needed = self._window_max_needed(now, needed)
        self._above_since = (self._above_since if self._above_since is not None else now) \
            if util > cfg.scale_up_utilization else None
        self._below_since = (self._below_since if self._below_since is not None else now) \
            if util < cfg.scale_down_utilization else None

        if self._above_since is not None and now - self._above_since >= cfg.decision_delay_s:
            limit = max(math.ceil(current * cfg.max_step_factor), current + 1)
            desired = cfg.bounds.clamp(min(needed, limit))
            if desired > current and self._cooldown.may_scale_up(now):
                held_s = now - self._above_since
                self._cooldown.changed(now)
                # Like an HPA sync period: the next scale-up needs another full delay of evidence.
                self._above_since = None
                return ScalingDecision(now, desired, Action.SCALE_UP,
                                       f"utilization {util:.2f} > {cfg.scale_up_utilization} for "
                                       f"{held_s:g} s", self.name)
        if self._below_since is not None and now - self._below_since >= cfg.decision_delay_s:
            desired = cfg.bounds.clamp(stable_needed)
            if desired < current and self._cooldown.may_scale_down(now):
                self._cooldown.changed(now)
                self._below_since = None
                return ScalingDecision(now, desired, Action.SCALE_DOWN,
                                       f"utilization {util:.2f} < {cfg.scale_down_utilization} for "
                                       f"{cfg.decision_delay_s:g} s", self.name)
        desired = cfg.bounds.clamp(current)
        action = Action.HOLD if desired == current else (Action.SCALE_UP if desired > current else Action.SCALE_DOWN)
        return ScalingDecision(now, desired, action, f"utilization {util:.2f}", self.name)
