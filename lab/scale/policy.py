"""The scaling-policy protocol, replica bounds and cool-downs shared by policies, and `Static`.

Contract: a `Policy` has a `name` and `decide(signals) -> ScalingDecision`; it may keep state
between calls (a stabilisation window, the time of its last change), so one policy object drives
one fleet. `reset()` forgets that state. `Bounds` clamps a desired count to [min, max] replicas;
`Cooldown` remembers when the policy last scaled up or down and says whether it may again
(Kubernetes HPA's stabilisation windows, AWS's cool-downs). `CooldownPolicy` is the base of the
dynamic policies (reactive, target tracking, predictive): it holds the config (whose `bounds` and
`cooldown` fields every such config has), the name and the `Cooldown`, and its `reset()` forgets the
last change. `Static` always asks for the same count: static peak provisioning, the baseline every
dynamic policy is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from lab.scale.signals import Action, LoadSignals, ScalingDecision


class Policy(Protocol):
    name: str

    def decide(self, signals: LoadSignals) -> ScalingDecision: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Bounds:
    min_replicas: int = 1
    max_replicas: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class CooldownConfig:
    scale_up_cooldown_s: float = 0.0  # after any change, wait this long before scaling up again
    scale_down_cooldown_s: float = 300.0  # HPA's default scale-down stabilisation is 5 minutes

    def __post_init__(self) -> None:
        if self.scale_up_cooldown_s < 0 or self.scale_down_cooldown_s < 0:
            raise ValueError("cool-downs must be >= 0 seconds")


class Cooldown:
    """When the last change happened, and whether a new one is allowed yet."""

    def __init__(self, config: CooldownConfig) -> None:
        self.config = config
        self.last_change_s = -math.inf

    def may_scale_up(self, now_s: float) -> bool:
        return now_s - self.last_change_s >= self.config.scale_up_cooldown_s

    def may_scale_down(self, now_s: float) -> bool:
        return now_s - self.last_change_s >= self.config.scale_down_cooldown_s

    def changed(self, now_s: float) -> None:
        self.last_change_s = now_s

    def reset(self) -> None:
        self.last_change_s = -math.inf


class LimitsConfig(Protocol):
    """What `CooldownPolicy` reads from a policy's config."""

    @property
    def bounds(self) -> Bounds: ...

    @property
    def cooldown(self) -> CooldownConfig: ...


ConfigT = TypeVar("ConfigT", bound=LimitsConfig)


class CooldownPolicy(Generic[ConfigT]):
    """A policy's config, name and `Cooldown`; subclasses that keep more state extend `reset()`."""

    def __init__(self, config: ConfigT, name: str) -> None:
        self.config = config
        self.name = name
        self._cooldown = Cooldown(config.cooldown)

    def reset(self) -> None:
        self._cooldown.reset()


def check_rate_target(replica_capacity_per_s: float, target_load: float) -> None:
    """Raise `ValueError` unless replica_capacity_per_s > 0 and 0 < target_load <= 1."""
    if replica_capacity_per_s <= 0 or not 0 < target_load <= 1:
        raise ValueError("need replica_capacity_per_s > 0 and 0 < target_load <= 1")


def replicas_for_rate(rate_per_s: float, replica_capacity_per_s: float, target_load: float) -> int:
    """Replicas needed so `rate_per_s` loads each to `target_load` of its capacity (>= 0)."""
    check_rate_target(replica_capacity_per_s, target_load)
    return max(0, math.ceil(rate_per_s / (replica_capacity_per_s * target_load) - 1e-9))


class Static:
    """Always `replicas`: static (peak) provisioning."""

    def __init__(self, replicas: int, name: str = "static") -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        self.replicas = replicas
        self.name = name

    def decide(self, signals: LoadSignals) -> ScalingDecision:
        action = Action.HOLD if signals.provisioned_replicas == self.replicas else (
            Action.SCALE_UP if signals.provisioned_replicas < self.replicas else Action.SCALE_DOWN)
        return ScalingDecision(signals.time_s, self.replicas, action, f"static at {self.replicas}", self.name)

    def reset(self) -> None:
        pass
