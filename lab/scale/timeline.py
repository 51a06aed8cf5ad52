"""Per-second timeline of a simulation: arrivals, queue, running, replicas, target.

Contract: `Timeline.empty(n)` preallocates `n` seconds; the simulator calls `record(t, ...)` once per
second of the workload. Arrays are indexed by second. `utilization()` is the concurrency load on
ready replicas (running + queued over their slots), smoothed over `window_s`; `demand_load(...)` is
the offered request rate (smoothed) over the ready replicas' sustainable rate, the quantity the
article's 70/85 % thresholds speak about; `decision_lateness_s(...)` measures how long after the
offered load first crossed a threshold each scale-up decision came.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timeline:
    arrivals: np.ndarray
    queued: np.ndarray
    running: np.ndarray
    ready: np.ndarray
    provisioned: np.ndarray  # starting + ready (not draining)
    alive: np.ndarray  # everything billed: starting, ready, draining
    target: np.ndarray

    @classmethod
    def empty(cls, seconds: int) -> Timeline:
        return cls(*(np.zeros(seconds, dtype=np.int64) for _ in range(7)))

    def record(self, t: int, arrivals: int, queued: int, running: int, ready: int, provisioned: int,
               alive: int, target: int) -> None:
        self.arrivals[t], self.queued[t], self.running[t] = arrivals, queued, running
        self.ready[t], self.provisioned[t], self.alive[t], self.target[t] = ready, provisioned, alive, target

    @staticmethod
    def _smooth(values: np.ndarray, window_s: int) -> np.ndarray:
        if window_s <= 1:
            return values.astype(float)
        kernel = np.ones(window_s) / window_s
        return np.convolve(values.astype(float), kernel, mode="full")[: len(values)]  # trailing mean

    def demand_load(self, replica_capacity_per_s: float, window_s: int = 60) -> np.ndarray:
        """Offered requests/s (trailing mean) over the ready replicas' sustainable requests/s."""
        capacity = self.ready.astype(float) * replica_capacity_per_s
        rate = self._smooth(self.arrivals, window_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(capacity > 0, rate / np.maximum(capacity, 1e-12), np.where(rate > 0, np.inf, 0.0))

    def decision_lateness_s(self, decision_times_s: Sequence[float], load: np.ndarray,
                            threshold: float) -> list[float]:
        """For each decision: seconds since `load` last rose to >= threshold and stayed there.

        A decision made while the load is still below the threshold (ahead of it) counts 0 s late.
        """
        above = load >= threshold
        out = []
        for t in decision_times_s:
            i = int(t)
            if i >= len(above) or not above[i]:
                out.append(0.0)
                continue
            below = np.flatnonzero(~above[: i + 1])
            out.append(float(i - (below[-1] + 1)) if len(below) else float(i))
        return out
