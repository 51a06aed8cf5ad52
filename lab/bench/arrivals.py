"""Arrival processes: when each request of a benchmark is sent, as offsets from the start.

Contract: every process is a frozen dataclass with `arrival_times_s(num_requests, rng)` returning
a non-decreasing float64 array of `num_requests` offsets in seconds, the first at 0.0 (the run
starts with a request, as vLLM's `bench serve` does). Randomness comes only from the numpy
`Generator` passed in, so a seed fixes the schedule.

- `GammaArrivals(rate, burstiness)`: gaps ~ Gamma(shape=burstiness, scale=1/(rate*burstiness)),
  vLLM's definition; mean gap 1/rate, burstiness 1 is Poisson, < 1 burstier, > 1 smoother.
- `PoissonArrivals(rate)`: exponential gaps (gamma with burstiness 1).
- `ConstantArrivals(rate)`: a request every 1/rate seconds.
- `FlashSaleArrivals(rate, factor, start_s, end_s, burstiness)`: a flash-sale step: the rate is
  `factor * rate` between `start_s` and `end_s` and `rate` elsewhere. Built by time rescaling:
  unit-rate gamma gaps in "expected request count" space mapped back through the piecewise
  linear cumulative rate, so the base and burst phases have exactly the requested mean rates.
- `TraceArrivals(arrivals_s)`: the timestamps of a trace (already scaled; see `lab.bench.traces`).
A rate of `math.inf` sends every request at 0.0 (vLLM's default `--request-rate inf`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ArrivalProcess(Protocol):
    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray: ...

    def describe(self) -> dict[str, object]: ...


def _check_rate(rate_per_s: float) -> None:
    if not rate_per_s > 0:  # also rejects NaN
        raise ValueError(f"request rate must be > 0 per second (or inf), got {rate_per_s}")


def _from_gaps(gaps_s: np.ndarray) -> np.ndarray:
    # n requests need n-1 gaps; the first request goes at 0.
    return np.concatenate(([0.0], np.cumsum(gaps_s[:-1]))) if len(gaps_s) else np.zeros(0)


def _unit_gaps(num_requests: int, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Gaps of a renewal process with mean 1 (gamma; shape = burstiness)."""
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    return rng.gamma(shape=burstiness, scale=1.0 / burstiness, size=num_requests)


@dataclass(frozen=True)
class GammaArrivals:
    request_rate_per_s: float
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        _check_rate(self.request_rate_per_s)

    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray:
        if math.isinf(self.request_rate_per_s):
            return np.zeros(num_requests)
        return _from_gaps(_unit_gaps(num_requests, self.burstiness, rng) / self.request_rate_per_s)

    def describe(self) -> dict[str, object]:
        return {"arrival": "gamma", "request_rate_per_s": self.request_rate_per_s, "burstiness": self.burstiness}


@dataclass(frozen=True)
class PoissonArrivals:
    request_rate_per_s: float

    def __post_init__(self) -> None:
        _check_rate(self.request_rate_per_s)

    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray:
        return GammaArrivals(self.request_rate_per_s, 1.0).arrival_times_s(num_requests, rng)

    def describe(self) -> dict[str, object]:
        return {"arrival": "poisson", "request_rate_per_s": self.request_rate_per_s}


@dataclass(frozen=True)
class ConstantArrivals:
    request_rate_per_s: float

    def __post_init__(self) -> None:
        _check_rate(self.request_rate_per_s)

    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray:
        if math.isinf(self.request_rate_per_s):
            return np.zeros(num_requests)
        return np.arange(num_requests, dtype=np.float64) / self.request_rate_per_s

    def describe(self) -> dict[str, object]:
        return {"arrival": "constant", "request_rate_per_s": self.request_rate_per_s}


@dataclass(frozen=True)
class FlashSaleArrivals:
    request_rate_per_s: float  # the base rate, outside the burst
    factor: float  # the rate during the burst is factor * request_rate_per_s
    start_s: float
    end_s: float
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        _check_rate(self.request_rate_per_s)
        if math.isinf(self.request_rate_per_s):
            raise ValueError("a flash-sale burst needs a finite base request rate")
        if not self.factor > 0:
            raise ValueError(f"flash-sale factor must be > 0, got {self.factor}")
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(f"flash-sale window needs 0 <= start < end, got {self.start_s}..{self.end_s}")

    def rate_at(self, t_s: float) -> float:
        burst = self.start_s <= t_s < self.end_s
        return self.request_rate_per_s * (self.factor if burst else 1.0)

    def _time_of_expected_count(self, count: np.ndarray) -> np.ndarray:
        # Invert the cumulative rate Lambda(t), piecewise linear with knees at start_s and end_s.
        base, burst = self.request_rate_per_s, self.request_rate_per_s * self.factor
        at_start = base * self.start_s
        at_end = at_start + burst * (self.end_s - self.start_s)
        return np.where(
            count < at_start,
            count / base,
            np.where(count < at_end, self.start_s + (count - at_start) / burst, self.end_s + (count - at_end) / base),
        )

    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray:
        counts = _from_gaps(_unit_gaps(num_requests, self.burstiness, rng))
        return self._time_of_expected_count(counts)

    def describe(self) -> dict[str, object]:
        return {"arrival": "flash-sale", "request_rate_per_s": self.request_rate_per_s, "factor": self.factor,
                "start_s": self.start_s, "end_s": self.end_s, "burstiness": self.burstiness}


@dataclass(frozen=True)
class TraceArrivals:
    arrivals_s: tuple[float, ...]

    def arrival_times_s(self, num_requests: int, rng: np.random.Generator) -> np.ndarray:
        if num_requests > len(self.arrivals_s):
            raise ValueError(f"the trace has {len(self.arrivals_s)} arrivals, {num_requests} requested")
        return np.asarray(self.arrivals_s[:num_requests], dtype=np.float64)

    def describe(self) -> dict[str, object]:
        return {"arrival": "trace"}
