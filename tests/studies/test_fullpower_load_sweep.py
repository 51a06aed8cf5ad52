"""Sized sweeps against the scripted fake server: requests per point follow the rate and the
duration, a saturated server ends the rate sweep, and knee points cap requests in flight."""

from __future__ import annotations

import pytest

from lab.studies.fullpower.load_sweep import rates_below, sweep_knee, sweep_load
from lab.bench.runner import BenchConfig
from lab.bench.workloads import RandomWorkload
from tests.bench.fake_openai import FakeBehaviour


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


@pytest.mark.parametrize("fake_server", [FakeBehaviour(first_token_delay_s=0.3)], indirect=True)
def test_knee_points_cap_requests_in_flight_and_scale_with_the_cap(fake_server, prompt_builder):
    # Slow answers: on a loaded machine, all 4 slots must still fill before the first answer ends.
    results = sweep_knee(config(fake_server), [4, 1], requests_per_slot=2.0, min_requests=3, prompts=prompt_builder)
    assert [(r.config.max_concurrency, r.num_planned) for r in results] == [(1, 3), (4, 8)]
    assert fake_server.log.max_in_flight == 4


def test_a_server_missing_the_slo_everywhere_is_probed_down_to_the_floor(fake_server, prompt_builder):
    results = sweep_load(config(fake_server), [20.0, 10.0], point_duration_s=0.1, ttft_p99_slo_s=0.005,
                         min_requests=2, misses_before_stop=2, floor_rate_per_s=3.0, prompts=prompt_builder)
    # 10 and 20 miss, then the rate halves from the lowest (5) and ends exactly at the floor (3).
    assert [r.request_rate_per_s for r in results] == [3.0, 5.0, 10.0, 20.0]


def test_no_probing_below_the_given_rates_once_one_meets_the_slo(fake_server, prompt_builder):
    results = sweep_load(config(fake_server), [20.0], point_duration_s=0.1, ttft_p99_slo_s=1.0,
                         min_requests=2, floor_rate_per_s=1.0, prompts=prompt_builder)
    assert [r.request_rate_per_s for r in results] == [20.0]


def test_probe_rates_halve_and_end_at_the_floor():
    assert rates_below(0.25, 0.05) == [0.125, 0.0625, 0.05]
    assert rates_below(0.25, 0.0625) == [0.125, 0.0625]
    assert rates_below(0.25, 0.25) == []
