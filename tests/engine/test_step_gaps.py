"""The step-gap histogram: gaps only between steps with requests in flight, Prometheus' cumulative buckets."""
from __future__ import annotations

import pytest

from lab.engine.step_gaps import STEP_GAP_BUCKETS_S, StepGaps


def bucket(stats, bound: float) -> int:
    return stats.bucket_counts[STEP_GAP_BUCKETS_S.index(bound)]


def test_gaps_span_busy_steps_only_and_fill_cumulative_buckets():
    gaps = StepGaps()
    gaps.step_ended(True, now=10.0)  # the first step: nothing before it
    gaps.step_ended(True, now=10.004)  # 4 ms
    gaps.step_ended(False, now=10.024)  # 20 ms, and the engine is idle after it
    gaps.step_ended(True, now=15.0)  # the idle 5 s is no gap
    gaps.step_ended(True, now=16.2)  # a 1.2 s stall
    gaps.observe(0.01)  # exactly on a bound: counts in it (Prometheus' le)
    stats = gaps.snapshot()
    assert stats.count == 4
    assert stats.sum_s == pytest.approx(0.004 + 0.020 + 1.2 + 0.01)
    assert stats.max_s == pytest.approx(1.2)
    assert bucket(stats, 0.0025) == 0 and bucket(stats, 0.005) == 1
    assert bucket(stats, 0.01) == 2 and bucket(stats, 0.025) == 3
    assert bucket(stats, 1.0) == 3 and bucket(stats, 2.5) == 4 and bucket(stats, 60.0) == 4


def test_a_gap_past_the_last_bound_counts_only_in_inf():
    gaps = StepGaps()
    gaps.observe(120.0)
    stats = gaps.snapshot()
    assert stats.count == 1 and stats.bucket_counts[-1] == 0 and stats.max_s == 120.0
