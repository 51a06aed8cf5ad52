"""The headline table of notebook 03 from hand-made sweep results: max QPS, P99 at the baseline's
max load, the knee, and the metric names the claims table reads."""

from __future__ import annotations

import dataclasses
import math

import pytest

from lab.studies.fullpower.headline import EngineRun, headline_markdown, headline_metrics, knee_metrics
from lab.studies.fullpower.load_sweep import requests_for_rate
from lab.report.claims import claims_by_id
from tests.bench.helpers import bench_result

SLO_S = 0.5


def capped(cap: int, ttfts_s: list[float], num_failed: int = 0):
    result = bench_result(math.inf, ttfts_s, num_failed=num_failed)
    return dataclasses.replace(result, config=dataclasses.replace(result.config, max_concurrency=cap))


def runs() -> tuple[EngineRun, EngineRun]:
    # bench_result: every request's E2E is its TTFT + 0.1 s, over a 10 s run.
    baseline = EngineRun("baseline", load=(bench_result(1.0, [0.1, 0.2, 0.3]), bench_result(2.0, [0.2, 0.4]),
                                           bench_result(4.0, [0.3, 2.0])),
                         knee=(capped(1, [0.1, 0.1]), capped(128, [0.5, 0.5]), capped(256, [1.9, 1.9], num_failed=2)))
    fullpower = EngineRun("fullpower", load=(bench_result(1.0, [0.05]), bench_result(2.0, [0.05, 0.06]),
                                             bench_result(4.0, [0.1, 0.1]), bench_result(8.0, [0.2, 0.45, 0.3])),
                          knee=(capped(1, [0.1]), capped(256, [0.3, 0.3])))
    return baseline, fullpower


def test_max_qps_ratio_and_p99_at_the_baselines_max_load():
    m = headline_metrics(*runs(), ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    # Baseline: 4 req/s misses (P99 TTFT ~2 s), so its max is the 2 req/s point: 2 requests in 10 s.
    assert m["baseline_max_qps_offered_per_s"] == 2.0 and m["baseline_max_qps"] == pytest.approx(0.2)
    assert m["fullpower_max_qps_offered_per_s"] == 8.0 and m["fullpower_max_qps"] == pytest.approx(0.3)
    assert m["qps_ratio"] == pytest.approx(1.5)
    # Both at 2 req/s: baseline P99 E2E ~ 0.4 + 0.1, full power ~ 0.06 + 0.1.
    assert m["baseline_p99_e2e_ms"] == pytest.approx(498, abs=3)
    assert m["fullpower_p99_e2e_ms"] == pytest.approx(160, abs=1)
    assert m["p99_e2e_ratio"] == pytest.approx(m["baseline_p99_e2e_ms"] / m["fullpower_p99_e2e_ms"])
    assert "baseline_gpu_util_pct" not in m  # no telemetry: no fake 0 %


def test_knee_reads_the_first_cap_above_the_knee_against_the_lowest():
    k = knee_metrics(runs()[0].knee, knee_concurrency=128)
    # Mean E2E 2.0 s at cap 256 against 0.2 s at cap 1; 2 of 4 requests failed there.
    assert k["knee_latency_increase_pct"] == pytest.approx(900.0)
    assert k["knee_error_rate_pct"] == pytest.approx(50.0) and k["knee_concurrency_above"] == 256
    assert math.isnan(knee_metrics(runs()[0].knee, knee_concurrency=512)["knee_error_rate_pct"])
    # Every level is recorded too, against the lowest cap: cap 128 has mean E2E 0.6 s, no errors.
    assert k["knee_c1_latency_increase_pct"] == 0.0 and k["knee_c1_error_rate_pct"] == 0.0
    assert k["knee_c128_latency_increase_pct"] == pytest.approx(200.0) and k["knee_c128_error_rate_pct"] == 0.0
    assert k["knee_c256_error_rate_pct"] == pytest.approx(50.0)


def test_a_baseline_that_never_meets_the_slo_is_an_upper_bound_and_the_ratio_a_lower_bound():
    _, fullpower = runs()
    fullpower = dataclasses.replace(fullpower, load=(bench_result(0.25, [0.05]), *fullpower.load))
    hopeless = EngineRun("baseline", load=(bench_result(0.25, [0.9, 1.2]), bench_result(1.0, [1.9, 2.2])))
    m = headline_metrics(hopeless, fullpower, ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    # Its max QPS is below the lowest rate it ran (0.25 req/s), which is what is recorded, marked as a bound.
    assert m["baseline_max_qps"] == 0.25 and m["baseline_max_qps_is_upper_bound"] == 1.0
    assert m["qps_ratio"] == pytest.approx(0.3 / 0.25)
    assert (m["qps_ratio_is_lower_bound"], m["qps_ratio_is_upper_bound"]) == (1.0, 0.0)
    # The P99 E2E comparison is read at that lowest rate, where full power ran too.
    assert m["headline_load_rate_per_s"] == 0.25
    assert m["baseline_p99_e2e_ms"] == pytest.approx(1297, abs=1) and m["fullpower_p99_e2e_ms"] == pytest.approx(150)
    table = headline_markdown(m)
    assert "| < 0.25 |" in table and "| >= 1.2x |" in table


def test_an_engine_passing_at_its_highest_rate_is_a_lower_bound_and_opposite_bounds_give_nan():
    baseline, fullpower = runs()
    m = headline_metrics(baseline, fullpower, ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    # Full power met the SLO at 8 req/s, the highest it ran: it never saturated.
    assert (m["fullpower_max_qps_is_lower_bound"], m["baseline_max_qps_is_lower_bound"]) == (1.0, 0.0)
    assert m["qps_ratio_is_lower_bound"] == 1.0 and m["fullpower_max_qps_num_requests"] == 3
    # A baseline that never saturated either: the true ratio could be anything.
    easy = EngineRun("baseline", load=(bench_result(1.0, [0.1]), bench_result(2.0, [0.1])))
    m = headline_metrics(easy, fullpower, ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    assert math.isnan(m["qps_ratio"]) and m["qps_ratio_is_lower_bound"] == m["qps_ratio_is_upper_bound"] == 0.0


def test_an_engine_without_a_complete_point_gives_nan_not_a_number_from_nowhere():
    _, fullpower = runs()
    interrupted = EngineRun("baseline", load=(bench_result(1.0, [0.1], partial=True),))
    m = headline_metrics(interrupted, fullpower, ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    assert math.isnan(m["baseline_max_qps"]) and math.isnan(m["qps_ratio"]) and math.isnan(m["p99_e2e_ratio"])
    assert m["baseline_max_qps_is_upper_bound"] == 0.0
    assert "n/a" in headline_markdown(m)


def test_the_claims_table_reads_what_the_notebook_records():
    m = headline_metrics(*runs(), ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    claims = claims_by_id()
    for claim_id in ("bench.qps", "bench.p99", "native.latency", "native.errors"):
        claim = claims[claim_id]
        assert claim.experiment == "03_baseline_vs_fullpower"
        assert claim.metric in m and (claim.baseline_metric is None or claim.baseline_metric in m)
    assert claims["bench.gpu_util"].metric == "fullpower_gpu_util_pct"  # recorded when a GPU was sampled


def test_points_are_sized_by_duration_within_bounds():
    assert requests_for_rate(4.0, 10.0, min_requests=8, max_requests=None) == 40
    assert requests_for_rate(0.1, 10.0, min_requests=8, max_requests=None) == 8
    assert requests_for_rate(100.0, 10.0, min_requests=8, max_requests=500) == 500
