"""Which latencies came around a reload: per-token wall times rebuilt from the client's timings, split by windows.

Contract (torch-free arithmetic, no server):
- A `ReloadWindow(label, start, end)` is a wall-clock interval (`time.time()` seconds, the clock the replica
  stamps its reload records with) during which a reload could touch serving: `reload_window(started_at,
  switched_at, window_s)` is `[started_at - window_s, switched_at + window_s]`, from the moment the replica began
  reading the new weights (the read, the checks and the probe run beside the step loop) to the moment the new
  weights took over, widened by `window_s` on both sides.
- `token_times(result, started_at)`: the wall-clock arrival of each content chunk of a successful request,
  `started_at + sent_s + ttft_s`, then one inter-token gap after another (`started_at` is the load's
  `BenchResult.started_at`, the instant `sent_s` counts from); none for a failed request.
- `ttft_intervals(...)` (one per successful request: from its send to its first token) and `itl_intervals(...)`
  (one per gap between two chunks) are `Timed(begin, end, value_s)`.
- `split(timed, windows) -> Split(around, steady)`: the values whose interval overlaps any window (closed
  intervals: touching counts) and the rest. A request whose wait for its first token spans a switch counts
  as around it, even if it was sent before the window and answered after.
- `p99_ms(values_s)`: numpy's linear-interpolated P99 in ms (as `lab.bench.metrics`), NaN for no values,
  never 0.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lab.bench.client import RequestResult


@dataclass(frozen=True)
class ReloadWindow:
    label: str
    start: float  # wall clock, seconds
    end: float

    def overlaps(self, begin: float, end: float) -> bool:
        return begin <= self.end and end >= self.start


def reload_window(started_at: float, switched_at: float, window_s: float, label: str = "") -> ReloadWindow:
    return ReloadWindow(label, started_at - window_s, switched_at + window_s)


@dataclass(frozen=True)
class Timed:
    begin: float  # wall clock, seconds
    end: float
    value_s: float


@dataclass(frozen=True)
class Split:
    around: tuple[float, ...]  # seconds
    steady: tuple[float, ...]


def token_times(result: RequestResult, started_at: float) -> list[float]:
    if not result.success or result.ttft_s is None:
        return []
    first = started_at + result.sent_s + result.ttft_s
    return [first, *(first + float(t) for t in np.cumsum(result.itl_s))]


def ttft_intervals(results: Iterable[RequestResult], started_at: float) -> list[Timed]:
    return [Timed(started_at + r.sent_s, started_at + r.sent_s + r.ttft_s, r.ttft_s)
            for r in results if r.success and r.ttft_s is not None]


def itl_intervals(results: Iterable[RequestResult], started_at: float) -> list[Timed]:
    timed = []
    for result in results:
        times = token_times(result, started_at)
        timed += [Timed(a, b, gap) for a, b, gap in zip(times, times[1:], result.itl_s)]
    return timed


def split(timed: Iterable[Timed], windows: Sequence[ReloadWindow]) -> Split:
    around, steady = [], []
    for t in timed:
        (around if any(w.overlaps(t.begin, t.end) for w in windows) else steady).append(t.value_s)
    return Split(tuple(around), tuple(steady))


def p99_ms(values_s: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values_s, dtype=np.float64), 99)) * 1e3 if len(values_s) else math.nan


def max_ms(values_s: Sequence[float]) -> float:
    return max(values_s) * 1e3 if len(values_s) else math.nan
