"""How long the step loop left running requests without a step: the longest gap between two engine steps.

Contract (torch-free): a step loop calls `StepGaps.step_ended(busy)` after every step, `busy` being whether
the engine still has unfinished requests. The gap is the time from the end of one step to the end of the
next, counted only when requests were in flight after the first (an idle engine waiting for work is not a
stall). It includes the step's own time: what matters is how long no token came out, whether the time went
into a slow step (a graph capture, a large prefill) or into work between steps (commands, host syncs, GC).
`snapshot()` is a frozen `StepGapStats`: a Prometheus-style histogram (cumulative counts at `STEP_GAP_BUCKETS_S`,
count, sum) plus the longest gap since the engine started. `lab.server.metrics` exports it as
`lab:engine_step_gap_seconds` and `lab:engine_step_gap_max_seconds`; a client reads a window's longest gap as
the difference of two scrapes (`lab.studies.fullpower.step_gaps`).
"""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

# From a fast decode step (~1 ms) to the multi-second stalls a P99 notices.
STEP_GAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class StepGapStats:
    bucket_counts: tuple[int, ...]  # cumulative: gaps <= STEP_GAP_BUCKETS_S[i] (+Inf is `count`)
    count: int  # gaps observed
    sum_s: float  # their total
    max_s: float  # the longest since the engine started (0 before the first)


NO_STEP_GAPS = StepGapStats((0,) * len(STEP_GAP_BUCKETS_S), 0, 0.0, 0.0)


class StepGaps:
    def __init__(self) -> None:
        self._counts = [0] * len(STEP_GAP_BUCKETS_S)  # per bucket, not cumulative
        self._count = 0
        self._sum_s = 0.0
        self._max_s = 0.0
        self._last_busy_end: float | None = None  # the end of the previous step, if requests were left after it

    def step_ended(self, busy: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last_busy_end is not None:
            self.observe(now - self._last_busy_end)
        self._last_busy_end = now if busy else None

    def observe(self, gap_s: float) -> None:
        index = bisect.bisect_left(STEP_GAP_BUCKETS_S, gap_s)  # le semantics: a gap equal to a bound counts in it
        if index < len(self._counts):
            self._counts[index] += 1
        self._count += 1
        self._sum_s += gap_s
        self._max_s = max(self._max_s, gap_s)

    def snapshot(self) -> StepGapStats:
        cumulative, total = [], 0
        for count in self._counts:
            total += count
            cumulative.append(total)
        return StepGapStats(tuple(cumulative), self._count, self._sum_s, self._max_s)
