"""Target tracking on request rate (AWS target tracking, Knative's RPS target): proportional.

Contract: `TargetTracking.decide` asks, every call, for `ceil(rate / (capacity * target_load))`
replicas, where rate is the gateway's measured request rate and capacity a replica's sustainable
requests/s (from the engine profile). Scale-ups follow the scale-up cool-down, scale-downs the
longer scale-down cool-down; bounds clamp the result. No forecast, no threshold band: it is the
simplest rate-based policy and a second reactive baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.scale.policy import Bounds, CooldownConfig, CooldownPolicy, check_rate_target, replicas_for_rate
from lab.scale.signals import Action, LoadSignals, ScalingDecision


@dataclass(frozen=True)
class TargetTrackingConfig:
    replica_capacity_per_s: float  # sustainable requests/s of one replica
    target_load: float = 0.7
    bounds: Bounds = field(default_factory=Bounds)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)

    def __post_init__(self) -> None:
        check_rate_target(self.replica_capacity_per_s, self.target_load)


class TargetTracking(CooldownPolicy[TargetTrackingConfig]):
    def __init__(self, config: TargetTrackingConfig, name: str = "target_tracking") -> None:
        super().__init__(config, name)

    def decide(self, s: LoadSignals) -> ScalingDecision:
        cfg, now, current = self.config, s.time_s, s.provisioned_replicas
        desired = cfg.bounds.clamp(replicas_for_rate(s.request_rate_per_s, cfg.replica_capacity_per_s,
                                                     cfg.target_load))
        reason = f"rate {s.request_rate_per_s:.1f}/s at target load {cfg.target_load}"
        if desired > current and self._cooldown.may_scale_up(now):
            self._cooldown.changed(now)
            return ScalingDecision(now, desired, Action.SCALE_UP, reason, self.name)
        if desired < current and self._cooldown.may_scale_down(now):
            self._cooldown.changed(now)
            return ScalingDecision(now, desired, Action.SCALE_DOWN, reason, self.name)
        return ScalingDecision(now, cfg.bounds.clamp(current), Action.HOLD, reason, self.name)
