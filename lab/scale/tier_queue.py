"""One gateway tier's queue in the simulator: FIFO cohorts with arrive / expire / admit.

Contract: a `TierQueue` holds a tier's waiting requests as cohorts `[arrival second, count]` and
its running `TierStats`. `arrive(t, n)` queues up to `max_queue` and sheds the rest; `expire(t)`
times out cohorts that waited longer than the tier's timeout (whole seconds); `admit(t, free)`
takes up to `free` requests oldest first and returns how many it took, crediting each with the
share of SLO-meeting requests for its wait (`slo_by_wait[w]`, precomputed by the simulator).
Counts only move between queued, served, shed and timed out, so `TierStats.conserved` holds once
the queue is empty. Cohorts keep the simulator's work per second independent of the request rate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lab.scale.tiers import SimulatedTier


@dataclass
class TierStats:
    name: str
    arrived: int = 0
    served: int = 0
    shed: int = 0
    timed_out: int = 0
    within_slo: float = 0.0  # expected count: whole seconds of wait x the prefill-time distribution
    wait_histogram: list[int] = field(default_factory=list)  # served requests by queue wait in s

    @property
    def conserved(self) -> bool:
        return self.arrived == self.served + self.shed + self.timed_out

    @property
    def slo_attainment(self) -> float:
        return self.within_slo / self.arrived if self.arrived else 1.0

    def wait_quantile_s(self, q: float) -> float:
        counts = np.asarray(self.wait_histogram, dtype=float)
        if counts.sum() == 0:
            return 0.0
        return float(np.searchsorted(np.cumsum(counts) / counts.sum(), q))


class TierQueue:
    def __init__(self, tier: SimulatedTier, slo_by_wait: list[float]) -> None:
        self.tier = tier
        self.timeout_ticks = math.floor(tier.timeout_s)  # waited longer than this: timed out
        if len(slo_by_wait) != self.timeout_ticks + 1:
            raise ValueError("slo_by_wait needs one entry per whole second of wait up to the timeout")
        self.slo_by_wait = slo_by_wait
        self.cohorts: deque[list[int]] = deque()
        self.queued = 0
        self.stats = TierStats(tier.name, wait_histogram=[0] * (self.timeout_ticks + 1))

    def arrive(self, t: int, n: int) -> None:
        accepted = min(n, self.tier.max_queue - self.queued)
        self.stats.arrived += n
        self.stats.shed += n - accepted
        if accepted:
            self.cohorts.append([t, accepted])
            self.queued += accepted

    def expire(self, t: int) -> None:
        cohorts = self.cohorts
        while cohorts and t - cohorts[0][0] > self.timeout_ticks:
            count = cohorts.popleft()[1]
            self.stats.timed_out += count
            self.queued -= count

    def admit(self, t: int, free: int) -> int:
        cohorts, st, taken = self.cohorts, self.stats, 0
        while cohorts and taken < free:
            cohort = cohorts[0]
            take = min(cohort[1], free - taken)
            wait = t - cohort[0]
            st.served += take
            st.within_slo += take * self.slo_by_wait[wait]
            st.wait_histogram[wait] += take
            cohort[1] -= take
            taken += take
            if cohort[1] == 0:
                cohorts.popleft()
        self.queued -= taken
        return taken
