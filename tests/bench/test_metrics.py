"""vLLM's metric definitions on hand-made per-request timings, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from lab.bench.metrics import LatencyStats, Slo, compute_metrics, metrics_by_tier, parse_slos
from lab.errors import LabError
from tests.bench.helpers import failed, ok

# R0: TPOT (0.5-0.1)/(5-1) = 0.1; R1: (1.0-0.2)/(3-1) = 0.4; R2 has one token: no TPOT.
RESULTS = [
    ok(0, ttft_s=0.1, e2e_s=0.5, output_tokens=5, itl_s=(0.1, 0.1, 0.1, 0.1), input_tokens=10, tier="vip"),
    ok(1, ttft_s=0.2, e2e_s=1.0, output_tokens=3, itl_s=(0.3, 0.5), input_tokens=20, tier="batch"),
    ok(2, ttft_s=0.3, e2e_s=0.3, output_tokens=1, input_tokens=30, tier="vip"),
    failed(3, "timeout", input_tokens=40),
    failed(4, "http_503"),
    failed(5, "cancelled"),
]
DURATION_S = 2.0


def approx(stats: LatencyStats, mean, median, p90, p99, std=None):
    assert stats.mean_s == pytest.approx(mean)
    assert stats.median_s == pytest.approx(median)
    assert stats.p90_s == pytest.approx(p90)
    assert stats.p99_s == pytest.approx(p99)
    if std is not None:
        assert stats.std_s == pytest.approx(std)


def test_ttft_e2e_percentiles_over_completed_requests():
    m = compute_metrics(RESULTS, DURATION_S)
    # sorted [0.1, 0.2, 0.3]: P90 at rank 1.8 -> 0.28, P99 at rank 1.98 -> 0.298 (linear).
    approx(m.ttft, 0.2, 0.2, 0.28, 0.298, std=math.sqrt(0.02 / 3))
    # sorted [0.3, 0.5, 1.0]: P90 -> 0.5 + 0.8*0.5, P99 -> 0.5 + 0.98*0.5
    approx(m.e2e, 0.6, 0.5, 0.9, 0.99)
    assert m.ttft.count == m.e2e.count == 3


def test_tpot_only_for_requests_with_more_than_one_token():
    m = compute_metrics(RESULTS, DURATION_S)
    assert m.tpot.count == 2
    approx(m.tpot, 0.25, 0.25, 0.1 + 0.9 * 0.3, 0.1 + 0.99 * 0.3, std=0.15)


def test_itl_pools_every_gap():
    m = compute_metrics(RESULTS, DURATION_S)
    # [0.1, 0.1, 0.1, 0.1, 0.3, 0.5]: P90 at rank 4.5 -> 0.4, P99 at rank 4.95 -> 0.49
    assert m.itl.count == 6
    approx(m.itl, 0.2, 0.1, 0.4, 0.49)


def test_throughputs_counts_and_errors():
    m = compute_metrics(RESULTS, DURATION_S)
    assert (m.completed, m.failed, m.cancelled, m.timeouts) == (3, 2, 1, 1)
    assert m.errors_by_kind == {"http_503": 1, "timeout": 1}
    assert m.total_input_tokens == 60 and m.total_output_tokens == 9
    assert m.request_throughput_per_s == pytest.approx(1.5)
    assert m.output_throughput_tok_per_s == pytest.approx(4.5)
    assert m.total_throughput_tok_per_s == pytest.approx(34.5)
    assert m.goodput_per_s is None


def test_goodput_counts_requests_meeting_every_slo():
    m = compute_metrics(RESULTS, DURATION_S, parse_slos(["ttft:250", "tpot:200"]))
    assert m.good_requests == 1  # R1 misses TPOT, R2 misses TTFT
    assert m.goodput_per_s == pytest.approx(0.5)


def test_goodput_treats_single_token_tpot_as_zero_like_vllm():
    m = compute_metrics(RESULTS, DURATION_S, (Slo("tpot", 150.0),))
    assert m.good_requests == 2  # R0 (0.1 s) and R2 (one token)


def test_goodput_e2el_slo_is_inclusive():
    m = compute_metrics(RESULTS, DURATION_S, (Slo("e2el", 500.0),))
    assert m.good_requests == 2  # 0.5 <= 0.5 and 0.3


def test_per_tier_breakdown_uses_the_run_duration():
    tiers = metrics_by_tier(RESULTS, DURATION_S)
    assert set(tiers) == {"vip", "batch", "default"}
    assert tiers["vip"].completed == 2 and tiers["vip"].request_throughput_per_s == pytest.approx(1.0)
    assert tiers["vip"].ttft.mean_s == pytest.approx(0.2)
    assert tiers["default"].failed == 2 and tiers["default"].completed == 0


def test_no_completed_requests_gives_nan_not_zero():
    m = compute_metrics([failed(0, "connect")], 1.0)
    assert math.isnan(m.ttft.p99_s) and math.isnan(m.tpot.mean_s)
    assert m.request_throughput_per_s == 0.0 and m.failed == 1


def test_flat_names_carry_units():
    flat = compute_metrics(RESULTS, DURATION_S, (Slo("ttft", 250.0),)).flat()
    assert flat["ttft_p99_ms"] == pytest.approx(298.0)
    assert flat["tpot_median_ms"] == pytest.approx(250.0)
    assert flat["errors_timeout"] == 1.0 and flat["goodput_per_s"] == pytest.approx(1.0)  # R0 and R1


@pytest.mark.parametrize("text", ["ttft", "latency:5", "ttft:abc", "ttft:-1"])
def test_bad_slos_are_rejected(text):
    with pytest.raises(LabError):
        parse_slos([text])
