"""Multi-day workloads from a trace: per-second arrival counts plus request sizes.

Contract: `build_workload(trace, spec)` returns a `Workload` of `spec.days` days at one-second
resolution. Two modes:
- "modulate" (the one-hour Azure trace): the expected rate at second t is
  `base_rate_per_s * hour_shape(t) * daily(t) * weekly(t) * flash(t)`, where `hour_shape` is the
  trace's per-minute arrival rate normalised to mean 1 and tiled forward then backward (so hours
  join without a jump; it still repeats every two hours, which a forecaster may not know), `daily` a cosine with
  `daily_amplitude` peaking at `peak_hour`, `weekly` multiplies Saturdays and Sundays (second 0 is a
  Monday 00:00) by `weekend_factor`, and `flash` the injected flash sales (ramp up, hold, ramp down);
  counts are Poisson draws of that rate (seeded);
- "replay" (a trace that already spans the days): the trace's own per-second counts, thinned or
  repeated by Poisson draws when `rate_scale != 1`.
"auto" replays when the trace covers the requested days, else modulates. Request sizes are the
trace's (prompt, output) pairs; `spec.params()` is everything needed to rebuild the workload,
for the result record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lab.scale.forecast import Series
from lab.scale.trace import Trace

DAY_S = 86_400
WEEK_S = 7 * DAY_S


@dataclass(frozen=True)
class FlashSale:
    start_s: float
    duration_s: float  # at full multiplier, after the ramp up
    multiplier: float  # rate multiplier at the top
    ramp_s: float = 120.0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.multiplier < 1 or self.ramp_s < 0:
            raise ValueError("a flash sale needs duration_s > 0, multiplier >= 1, ramp_s >= 0")

    def factor(self, t_s: np.ndarray) -> np.ndarray:
        up_end = self.start_s + self.ramp_s
        hold_end = up_end + self.duration_s
        ramp = np.clip((t_s - self.start_s) / max(self.ramp_s, 1e-9), 0, 1) \
            - np.clip((t_s - hold_end) / max(self.ramp_s, 1e-9), 0, 1)
        return 1.0 + (self.multiplier - 1.0) * ramp


@dataclass(frozen=True)
class WorkloadSpec:
    days: float = 1.0
    base_rate_per_s: float = 100.0  # mean arrivals/s when every envelope factor is 1
    daily_amplitude: float = 0.5  # daily(t) = 1 + a*cos(2*pi*(hour - peak_hour)/24)
    peak_hour: float = 14.0
    weekend_factor: float = 0.7
    flash_sales_per_day: float = 1.0  # random flash sales, mean count per day (seeded)
    flash_multiplier: float = 2.0
    flash_duration_s: float = 1800.0
    flash_ramp_s: float = 120.0
    flash_sales: tuple[FlashSale, ...] = ()  # explicit ones, in addition to the random ones
    mode: str = "auto"  # auto | modulate | replay
    rate_scale: float = 1.0  # replay only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.days <= 0 or self.base_rate_per_s < 0 or not 0 <= self.daily_amplitude < 1:
            raise ValueError("need days > 0, base_rate_per_s >= 0 and 0 <= daily_amplitude < 1")
        if self.weekend_factor < 0 or self.flash_sales_per_day < 0 or self.rate_scale < 0:
            raise ValueError("weekend_factor, flash_sales_per_day and rate_scale must be >= 0")
        if self.mode not in ("auto", "modulate", "replay"):
            raise ValueError(f"mode must be auto, modulate or replay, got {self.mode!r}")
        object.__setattr__(self, "flash_sales", tuple(self.flash_sales))

    @property
    def duration_s(self) -> int:
        return int(round(self.days * DAY_S))

    def params(self) -> dict[str, Any]:
        out = {f"workload.{k}": v for k, v in asdict(self).items() if k != "flash_sales"}
        out["workload.explicit_flash_sales"] = [asdict(f) for f in self.flash_sales]
        return out


@dataclass(frozen=True)
class Workload:
    spec: WorkloadSpec
    mode: str  # the mode actually used
    arrivals_per_s: np.ndarray  # int64 count of arrivals in second t
    expected_rate_per_s: np.ndarray  # the rate the counts were drawn from (the counts, in replay)
    flash_sales: tuple[FlashSale, ...]  # every injected sale, random ones included
    prompt_tokens: np.ndarray  # request-size samples (from the trace)
    output_tokens: np.ndarray
    trace_source: str

    @property
    def duration_s(self) -> int:
        return len(self.arrivals_per_s)

    @property
    def total_requests(self) -> int:
        return int(self.arrivals_per_s.sum())

    def rate_series(self, step_s: int = 60, start_s: int = 0, end_s: int | None = None) -> Series:
        """Observed mean arrivals/s per `step_s` bucket over [start_s, end_s): what a gateway exports."""
        end_s = self.duration_s if end_s is None else end_s
        counts = self.arrivals_per_s[start_s:end_s]
        n = len(counts) // step_s
        return Series(float(start_s), float(step_s), counts[: n * step_s].reshape(n, step_s).mean(axis=1))

    def params(self) -> dict[str, Any]:
        return {**self.spec.params(), "workload.mode_used": self.mode, "workload.trace": self.trace_source,
                "workload.flash_sales": [asdict(f) for f in self.flash_sales],
                "workload.total_requests": self.total_requests}


def _envelope(spec: WorkloadSpec, t_s: np.ndarray) -> np.ndarray:
    hour = (t_s % DAY_S) / 3600.0
    daily = 1.0 + spec.daily_amplitude * np.cos(2 * np.pi * (hour - spec.peak_hour) / 24.0)
    weekday = (t_s // DAY_S) % 7
    weekly = np.where(weekday >= 5, spec.weekend_factor, 1.0)
    return daily * weekly


def _random_flash_sales(spec: WorkloadSpec, rng: np.random.Generator) -> tuple[FlashSale, ...]:
    count = rng.poisson(spec.flash_sales_per_day * spec.days)
    # Sales start in business hours (09:00-21:00) of a random day: when marketing runs them.
    days = rng.integers(0, max(1, int(np.ceil(spec.days))), size=count)
    starts = days * DAY_S + rng.uniform(9 * 3600, 21 * 3600, size=count)
    return tuple(FlashSale(float(s), spec.flash_duration_s, spec.flash_multiplier, spec.flash_ramp_s)
                 for s in sorted(starts) if s < spec.duration_s)


def build_workload(trace: Trace, spec: WorkloadSpec) -> Workload:
    rng = np.random.default_rng(spec.seed)
    t_s = np.arange(spec.duration_s, dtype=float)
    mode = spec.mode
    if mode == "auto":
        mode = "replay" if trace.duration_s >= spec.duration_s else "modulate"
    if mode == "replay":
        if trace.duration_s < spec.duration_s - 1:
            raise ValueError(f"replay needs a trace of {spec.duration_s} s, this one has {trace.duration_s:.0f} s")
        rate = trace.counts_per_step(1.0)[: spec.duration_s].astype(float) * spec.rate_scale
        counts = rate.astype(np.int64) if spec.rate_scale == 1.0 else rng.poisson(rate)
        sales: tuple[FlashSale, ...] = ()
    else:
        per_minute = trace.counts_per_step(60.0).astype(float)
        per_minute = per_minute[:-1] if len(per_minute) > 1 else per_minute  # last minute is partial
        hour_shape = per_minute / per_minute.mean()
        # Ping-pong tiling (forward, then backward): consecutive hours meet without a jump.
        n = len(hour_shape)
        index = (t_s // 60).astype(np.int64) % (2 * n)
        index = np.where(index < n, index, 2 * n - 1 - index)
        rate = spec.base_rate_per_s * hour_shape[index]
        rate = rate * _envelope(spec, t_s)
        sales = tuple(sorted(spec.flash_sales + _random_flash_sales(spec, rng), key=lambda f: f.start_s))
        for sale in sales:
            rate = rate * sale.factor(t_s)
        counts = rng.poisson(rate)
    return Workload(spec, mode, counts.astype(np.int64), rate, sales, trace.prompt_tokens,
                    trace.output_tokens, trace.source)
