"""find_max_qps on hand-made sweep results."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lab.bench.arrivals import GammaArrivals, PoissonArrivals, TraceArrivals
from lab.bench.runner import BenchConfig
from lab.bench.sweep import find_max_qps, with_rate
from lab.bench.workloads import TraceWorkload
from lab.errors import LabError
from tests.bench.helpers import bench_result

# P99 of 100 equal values is that value.
SWEEP = [bench_result(rate, [ttft] * 100) for rate, ttft in ((1, 0.1), (2, 0.2), (4, 0.45), (8, 0.9))]


def test_max_rate_whose_p99_ttft_meets_the_slo():
    best = find_max_qps(SWEEP, ttft_p99_slo_s=0.5)
    assert best.request_rate_per_s == 4
    assert best.ttft_p99_s == pytest.approx(0.45)
    assert best.achieved_request_throughput_per_s == pytest.approx(100 / 10.0)


def test_slo_boundary_is_inclusive_and_order_does_not_matter():
    assert find_max_qps(list(reversed(SWEEP)), ttft_p99_slo_s=0.2).request_rate_per_s == 2


def test_none_when_no_point_meets_the_slo():
    assert find_max_qps(SWEEP, ttft_p99_slo_s=0.05) is None


def test_points_with_failures_or_partial_are_excluded():
    sweep = [SWEEP[0], SWEEP[1], bench_result(4, [0.3] * 99, num_failed=1), bench_result(8, [0.1] * 100, partial=True)]
    assert find_max_qps(sweep, 0.5).request_rate_per_s == 2
    assert find_max_qps(sweep, 0.5, max_failed_fraction=0.01).request_rate_per_s == 4


def test_p99_uses_the_tail_not_the_mean():
    # 98 fast requests and 2 slow ones: P99 (rank 98.01) lands on the slow ones.
    assert find_max_qps([bench_result(3, [0.1] * 98 + [2.0, 2.0])], 0.5) is None


def test_with_rate_keeps_the_process_kind_and_parameters():
    config = BenchConfig(arrivals=GammaArrivals(1.0, burstiness=0.5))
    assert with_rate(config, 7.0).arrivals == GammaArrivals(7.0, burstiness=0.5)
    assert with_rate(BenchConfig(), 3.0).arrivals == PoissonArrivals(3.0)  # a random workload's default
    assert math.isinf(with_rate(BenchConfig(), math.inf).request_rate_per_s)
    with pytest.raises(LabError, match="synthetic"):
        with_rate(BenchConfig(arrivals=TraceArrivals((0.0, 1.0))), 2.0)
    with pytest.raises(LabError, match="speedup"):
        with_rate(BenchConfig(workload=TraceWorkload(Path("t.csv"))), 2.0)  # its timestamps are the default


def test_concurrency_sweep_points_at_rate_inf_tie_break_on_achieved_throughput():
    slow = bench_result(math.inf, [0.1] * 10, duration_s=10.0)  # 1 req/s achieved
    fast = bench_result(math.inf, [0.2] * 10, duration_s=2.0)  # 5 req/s achieved
    best = find_max_qps([slow, fast], 0.5)
    assert best.achieved_request_throughput_per_s == pytest.approx(5.0) and math.isinf(best.request_rate_per_s)
    assert find_max_qps([slow, fast], 0.15).achieved_request_throughput_per_s == pytest.approx(1.0)
