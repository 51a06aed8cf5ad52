"""Predictive stepped scaling: a rate forecast, a warning level, a scaling level and headroom.

Contract: `PredictiveStepped.decide` computes the load the fleet will see over the next
`horizon_s` seconds: the larger of the forecast peak rate in [now, now + horizon] (the upper
interval bound by default) and the request rate measured now (so an unforecast burst still
scales), over the provisioned replicas' capacity. Then, stepped as in the article:
- load >= `scale_load` (85 %): scale up to the replicas that leave `headroom` (15 %) spare;
- load >= `warn_load` (70 %): WARN, no change (the alert that precedes a scale-up);
- below: after the scale-down cool-down, shrink to the replicas that keep the headroom.
`horizon_s` must cover the replica start-up time (a replica ordered now serves only after it), which
the config checks. `RateForecast` turns a `Forecast` into "peak rate over a window" lookups;
forecasts are made offline (Prophet fits take seconds), the policy only reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lab.scale.forecast import Forecast
from lab.scale.policy import Bounds, CooldownConfig, CooldownPolicy, replicas_for_rate
from lab.scale.signals import Action, LoadSignals, ScalingDecision


class RateForecast:
    """Peak forecast request rate over [t, t + horizon_s], from a `Forecast` of requests/s."""

    def __init__(self, forecast: Forecast, use_upper: bool = True) -> None:
        self.forecast = forecast
        self.values = np.asarray(forecast.upper if use_upper else forecast.mean, dtype=float)
        self._window_max: dict[int, np.ndarray] = {}

    def _maxima(self, window_steps: int) -> np.ndarray:
        if window_steps not in self._window_max:
            # Sliding maximum computed once per window length: decide() runs every control tick.
            padded = np.concatenate([self.values, np.full(window_steps, self.values[-1])])
            view = np.lib.stride_tricks.sliding_window_view(padded, window_steps + 1)
            self._window_max[window_steps] = view.max(axis=1)[: len(self.values)]
        return self._window_max[window_steps]

    def peak_rate_per_s(self, time_s: float, horizon_s: float) -> float:
        f = self.forecast
        index = int((time_s - f.start_s) // f.step_s)
        if index < 0 or index >= len(self.values):
            raise ValueError(f"time {time_s} s is outside the forecast [{f.start_s}, "
                             f"{f.start_s + f.step_s * len(self.values)}) s")
        return float(self._maxima(math.ceil(horizon_s / f.step_s))[index])


@dataclass(frozen=True)
class PredictiveConfig:
    replica_capacity_per_s: float  # sustainable requests/s of one replica
    replica_startup_s: float  # cold start: the horizon must cover it
    horizon_s: float = 300.0
    warn_load: float = 0.70
    scale_load: float = 0.85
    headroom: float = 0.15
    bounds: Bounds = field(default_factory=Bounds)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)

    def __post_init__(self) -> None:
        if self.replica_capacity_per_s <= 0:
            raise ValueError("replica_capacity_per_s must be > 0")
        if self.horizon_s < self.replica_startup_s:
            raise ValueError(f"horizon_s ({self.horizon_s}) must be >= replica_startup_s "
                             f"({self.replica_startup_s}): a replica ordered now serves only after it starts")
        if not 0 < self.warn_load <= self.scale_load <= 1:
            raise ValueError("need 0 < warn_load <= scale_load <= 1")
        if not 0 <= self.headroom < 1:
            raise ValueError("headroom must be in [0, 1)")


class PredictiveStepped(CooldownPolicy[PredictiveConfig]):
    def __init__(self, config: PredictiveConfig, forecast: RateForecast, name: str = "predictive") -> None:
        super().__init__(config, name)
        self.forecast = forecast

    def decide(self, s: LoadSignals) -> ScalingDecision:
        cfg, now, current = self.config, s.time_s, s.provisioned_replicas
        forecast_rate = self.forecast.peak_rate_per_s(now, cfg.horizon_s)
        rate = max(forecast_rate, s.request_rate_per_s)
        capacity = current * cfg.replica_capacity_per_s
        load = rate / capacity if capacity > 0 else (math.inf if rate > 0 else 0.0)
        keep = cfg.bounds.clamp(replicas_for_rate(rate, cfg.replica_capacity_per_s, 1 - cfg.headroom))
        why = f"{'forecast' if forecast_rate >= s.request_rate_per_s else 'measured'} rate {rate:.1f}/s, load {load:.2f}"
        if load >= cfg.scale_load and keep > current and self._cooldown.may_scale_up(now):
            self._cooldown.changed(now)
            return ScalingDecision(now, keep, Action.SCALE_UP, f"{why} >= {cfg.scale_load}", self.name)
        if load >= cfg.warn_load:
            return ScalingDecision(now, cfg.bounds.clamp(current), Action.WARN, f"{why} >= {cfg.warn_load}", self.name)
        if keep < current and self._cooldown.may_scale_down(now):
            self._cooldown.changed(now)
            return ScalingDecision(now, keep, Action.SCALE_DOWN, f"{why} < {cfg.warn_load}", self.name)
        return ScalingDecision(now, cfg.bounds.clamp(current), Action.HOLD, why, self.name)
