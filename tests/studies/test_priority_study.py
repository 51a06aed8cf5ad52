"""The priority study's setups and per-tier outcomes, on hand-made results (no processes)."""

from __future__ import annotations

import math

import pytest

from lab.studies.priority.study import TIER_KEYS, fcfs_setup, tier_mix, tier_outcomes, tiers_setup
from lab.gateway.auth import KeyStore
from lab.gateway.config import DEFAULT_TIERS, parse_config
from tests.bench.helpers import bench_result, failed, ok

REPLICA = [{"url": "http://127.0.0.1:9", "version": "v1"}]


def test_tiers_setup_maps_each_example_key_to_its_own_tier_in_front_of_a_priority_replica() -> None:
    setup = tiers_setup(max_inflight=8)
    config = parse_config({**setup.gateway_config, "replicas": REPLICA})
    keys = KeyStore(config.keys)
    assert {name: keys.lookup(key).tier for name, key in TIER_KEYS.items()} == {n: n for n in TIER_KEYS}
    assert [(t.name, t.timeout_ms) for t in config.tiers] == [(t.name, t.timeout_ms) for t in DEFAULT_TIERS]
    assert config.queue.max_inflight == 8 and setup.scheduling_policy == "priority"


def test_fcfs_setup_puts_every_key_in_one_queue_with_the_longest_timeout_and_summed_limits() -> None:
    setup = fcfs_setup(max_inflight=8)
    config = parse_config({**setup.gateway_config, "replicas": REPLICA})
    (shared,) = config.tiers
    assert {KeyStore(config.keys).lookup(key).tier for key in TIER_KEYS.values()} == {"shared"}
    assert shared.timeout_ms == 120_000 and shared.max_concurrency == 8
    assert shared.tier_limit.requests_per_s == sum(t.tier_limit.requests_per_s for t in DEFAULT_TIERS) == 1200
    assert setup.scheduling_policy == "fcfs"


def test_tier_mix_sends_each_tier_its_key_and_rejects_unknown_tiers() -> None:
    mix = tier_mix({"vip": 1, "batch": 3})
    assert [(t.name, t.api_key) for t in mix.tiers] == [("vip", "sk-vip-example"), ("batch", "sk-batch-example")]
    assert mix.probabilities.tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="unknown tiers"):
        tier_mix({"gold": 1})


def test_tier_outcomes_count_shed_timeouts_and_errors_apart_and_take_percentiles_of_successes() -> None:
    result = bench_result(1.0, [])
    rows = [ok(0, 0.1, 0.5, 4, tier="vip"), ok(1, 0.3, 0.9, 4, tier="vip"),
            failed(2, "http_429", tier="batch"), failed(3, "http_504", tier="batch"),
            failed(4, "timeout", tier="batch"), failed(5, "http_500", tier="batch"), ok(6, 1.0, 2.0, 4, tier="batch"), failed(7, "cancelled", tier="batch")]
    result = type(result)(**{**result.__dict__, "results": tuple(rows)})
    m = tier_outcomes(result, "tiers", ["vip", "batch", "async"])
    assert m["tiers_vip_requests"] == 2 and m["tiers_vip_success_pct"] == 100.0 and m["tiers_vip_shed_pct"] == 0.0
    assert m["tiers_vip_ttft_p50_ms"] == pytest.approx(200.0) and m["tiers_vip_e2e_p50_ms"] == pytest.approx(700.0)
    assert m["tiers_vip_e2e_p99_ms"] == pytest.approx(500 + 0.99 * 400)  # numpy's linear interpolation
    # batch: 5 counted (the cancelled one is not), 1 served, 2 shed (429 + 504), 1 client timeout, 1 error
    assert m["tiers_batch_requests"] == 5
    assert (m["tiers_batch_success_pct"], m["tiers_batch_shed_pct"], m["tiers_batch_timeout_pct"],
            m["tiers_batch_error_pct"], m["tiers_batch_preempted_pct"]) == (20.0, 40.0, 20.0, 20.0, 0.0)
    assert m["tiers_async_requests"] == 0 and math.isnan(m["tiers_async_success_pct"])
    assert math.isnan(m["tiers_async_e2e_p99_ms"])


def test_tier_outcomes_count_the_gateways_preempted_errors_apart_from_other_errors() -> None:
    from dataclasses import replace

    body = '{"error":{"message":"request of tier \'batch\' was preempted","type":"service_unavailable",' \
           '"param":null,"code":"preempted","tier":"batch"}}'
    event = '{"message": "request of tier \'batch\' was preempted", "type": "service_unavailable", "code": "preempted"}'
    other = '{"error":{"message":"no replica","type":"upstream_error","code":"no_replica"}}'
    rows = (replace(failed(0, "http_503", tier="batch"), error_message=body),
            replace(failed(1, "stream_error", tier="batch"), error_message=event),
            replace(failed(2, "http_503", tier="batch"), error_message=other),
            replace(failed(3, "http_500", tier="batch"), error_message="Internal Server Error"))
    result = bench_result(1.0, [])
    m = tier_outcomes(type(result)(**{**result.__dict__, "results": rows}), "tiers", ["batch"])
    assert (m["tiers_batch_preempted_pct"], m["tiers_batch_error_pct"], m["tiers_batch_shed_pct"]) == (50.0, 50.0, 0.0)


def test_tier_caps_can_be_overridden_by_name_and_unknown_names_are_refused() -> None:
    setup = tiers_setup(max_inflight=8, max_concurrency={"batch": 2})
    caps = {t.name: t.max_concurrency for t in parse_config({**setup.gateway_config, "replicas": REPLICA}).tiers}
    assert caps == {"vip": 32, "realtime": 64, "async": 128, "batch": 2}
    with pytest.raises(ValueError, match="unknown tiers"):
        tiers_setup(max_inflight=8, max_concurrency={"gold": 1})
