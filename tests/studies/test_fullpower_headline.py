"""The headline table of notebook 03 from hand-made sweep results: max QPS, P99 at each peer's max load,
saturation, step gaps, the targets against hf-cb, the knee, and the metric names the claims table reads."""

from __future__ import annotations

import dataclasses
import math

import pytest

from lab.studies.fullpower.headline import EngineRun, headline_metrics, knee_metrics, target_met
from lab.studies.fullpower.step_gaps import NOT_AVAILABLE, LongestStepGap
from lab.studies.fullpower.table import headline_markdown
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


def three_peers() -> tuple[EngineRun, ...]:
    baseline, fullpower = runs()
    fullpower = dataclasses.replace(fullpower, load_step_gaps=(
        LongestStepGap(0.004, False, 3), LongestStepGap(0.01, True, 5), LongestStepGap(1.2, False, 10), NOT_AVAILABLE))
    hf_cb = EngineRun("hf_cb", load=(bench_result(1.0, [0.1, 0.2]), bench_result(2.0, [0.4, 2.0])))
    untuned = EngineRun("untuned", load=(bench_result(1.0, [0.1]), bench_result(2.0, [0.1, 0.1]),
                                         bench_result(4.0, [3.0])))
    return hf_cb, untuned, baseline, fullpower


def test_full_power_against_three_peers_with_hf_cb_first():
    m = headline_metrics(*three_peers(), ttft_p99_slo_s=SLO_S, knee_concurrency=128)
    # hf-cb: 2 req/s misses (P99 TTFT ~2 s), so its max is 1 req/s: 2 requests in 10 s; full power 0.3 (>=).
    assert m["hf_cb_max_qps"] == pytest.approx(0.2) and m["hf_cb_max_qps_ratio"] == pytest.approx(1.5)
    assert m["hf_cb_max_qps_ratio_is_lower_bound"] == 1.0 and m["hf_cb_load_rate_per_s"] == 1.0
    # At 1 req/s: hf-cb's P99 E2E of 0.2 and 0.3 s is 0.2 + 0.99 * 0.1 = 0.299 s; full power's one request 0.15 s.
    assert m["hf_cb_p99_e2e_ms"] == pytest.approx(299) and m["fullpower_p99_e2e_ms_at_hf_cb_load"] == pytest.approx(150)
    assert m["hf_cb_p99_e2e_ratio"] == pytest.approx(299 / 150)
    # Targets: 1.5x is a lower bound under 4.4x (cannot tell); 1.99x lower P99 misses 6.7x.
    assert math.isnan(m["hf_cb_qps_target_met"]) and m["hf_cb_p99_e2e_target_met"] == 0.0
    # Saturation: the most delivered at any point, SLO or not: hf-cb 0.2 req/s (2 tokens each), full power 0.3.
    assert m["hf_cb_saturation_qps"] == pytest.approx(0.2) and m["fullpower_saturation_qps"] == pytest.approx(0.3)
    assert m["fullpower_saturation_output_tok_per_s"] == pytest.approx(0.6)
    assert m["hf_cb_saturation_ratio"] == pytest.approx(1.5)
    # Before tuning: passes at 2 req/s (2 requests), misses at 4: 0.3 / 0.2.
    assert m["untuned_max_qps"] == pytest.approx(0.2) and m["untuned_max_qps_ratio"] == pytest.approx(1.5)
    assert m["untuned_load_rate_per_s"] == 2.0 and m["fullpower_p99_e2e_ms_at_untuned_load"] == pytest.approx(160, abs=1)
    # The floor keeps the first records' names, and the new ones agree with them.
    assert m["hf_max_qps_ratio"] == m["qps_ratio"] == pytest.approx(1.5)
    assert m["hf_p99_e2e_ratio"] == m["p99_e2e_ratio"] and m["fullpower_p99_e2e_ms"] == pytest.approx(160, abs=1)
    # Step gaps: full power's longest over its rate sweep is the exact 1.2 s; the peers export none.
    assert m["fullpower_longest_step_gap_ms"] == pytest.approx(1200)
    assert m["fullpower_longest_step_gap_is_upper_bound"] == 0.0 and math.isnan(m["hf_cb_longest_step_gap_ms"])
    table = headline_markdown(m)
    assert table.index("hf-cb") < table.index("before tuning") < table.index("hf (transformers generate")
    assert "cannot tell" in table and "missed" in table and "not available" in table and "| 1,200 |" in table


def test_a_target_is_met_missed_or_cannot_be_told_from_a_bound():
    assert target_met(4.5, 4.4) == 1.0 and target_met(4.0, 4.4) == 0.0
    assert target_met(5.0, 4.4, is_lower_bound=1.0) == 1.0 and math.isnan(target_met(4.0, 4.4, is_lower_bound=1.0))
    assert target_met(4.0, 4.4, is_upper_bound=1.0) == 0.0 and math.isnan(target_met(5.0, 4.4, is_upper_bound=1.0))
    assert math.isnan(target_met(math.nan, 4.4))


def test_points_are_sized_by_duration_within_bounds():
    assert requests_for_rate(4.0, 10.0, min_requests=8, max_requests=None) == 40
    assert requests_for_rate(0.1, 10.0, min_requests=8, max_requests=None) == 8
    assert requests_for_rate(100.0, 10.0, min_requests=8, max_requests=500) == 500
