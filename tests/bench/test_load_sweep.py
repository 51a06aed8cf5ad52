"""Sized sweeps against the scripted fake server: requests per point follow the rate and the
duration, a saturated server ends the rate sweep, and knee points cap requests in flight."""

from __future__ import annotations

from lab.bench.load_sweep import sweep_knee, sweep_load
from lab.bench.runner import BenchConfig
from lab.bench.workloads import RandomWorkload


def config(server) -> BenchConfig:
    # The fake answers its first token after 20 ms: an SLO below that is always missed.
    return BenchConfig(base_url=server.base_url, workload=RandomWorkload(1, 4, 2), show_progress=False, num_warmups=0,
                       telemetry_interval_s=0.05)


def test_points_are_sized_by_rate_and_duration_and_all_run_when_the_slo_holds(fake_server, prompt_builder):
    results = sweep_load(config(fake_server), [40.0, 20.0, 80.0], point_duration_s=0.1, ttft_p99_slo_s=1.0,
                         min_requests=3, prompts=prompt_builder)
    assert [r.request_rate_per_s for r in results] == [20.0, 40.0, 80.0]  # ascending, whatever the order given
    assert [r.num_planned for r in results] == [3, 4, 8]  # max(3, rate * 0.1 s)
    assert all(r.config.arrivals.describe()["arrival"] == "poisson" for r in results)


def test_a_saturated_server_ends_the_sweep_after_the_allowed_misses(fake_server, prompt_builder):
    results = sweep_load(config(fake_server), [10.0, 20.0, 40.0, 80.0], point_duration_s=0.1, ttft_p99_slo_s=0.005,
                         min_requests=2, misses_before_stop=2, prompts=prompt_builder)
    assert [r.request_rate_per_s for r in results] == [10.0, 20.0]


def test_knee_points_cap_requests_in_flight_and_scale_with_the_cap(fake_server, prompt_builder):
    results = sweep_knee(config(fake_server), [4, 1], requests_per_slot=2.0, min_requests=3, prompts=prompt_builder)
    assert [(r.config.max_concurrency, r.num_planned) for r in results] == [(1, 3), (4, 8)]
    assert fake_server.log.max_in_flight == 4
