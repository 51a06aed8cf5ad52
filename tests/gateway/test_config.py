"""Gateway config: the example parses to the article's defaults; bad fields are named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.gateway.config import DEFAULT_TIERS, ConfigError, load_config, parse_config
from tests.gateway.fakes import make_config, tier

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "gateway.example.yaml"
REPLICA = {"url": "http://127.0.0.1:1", "version": "v1"}


def test_example_config_has_the_article_defaults():
    config = load_config(EXAMPLE)
    assert config.tiers == DEFAULT_TIERS
    vip, realtime = config.tier("vip"), config.tier("realtime")
    assert (vip.max_concurrency, vip.timeout_ms, realtime.max_concurrency, realtime.timeout_ms) == (32, 500, 64, 2000)
    assert [t.name for t in sorted(config.tiers, key=lambda t: t.priority)] == ["vip", "realtime", "async", "batch"]
    assert (config.health.interval_s, config.health.failure_threshold, config.canary.percent) == (15.0, 3, 1.0)
    assert config.stable_version == "v1" and config.admin_key_hash.startswith("sha256:")


def test_default_tiers_keep_slots_for_vip_and_let_it_preempt_lower_tiers_batch_first():
    share = {t.name: t.max_inflight_share for t in DEFAULT_TIERS}
    assert share == {"vip": 1.0, "realtime": 0.9, "async": 0.9, "batch": 0.5}
    assert {t.name: t.preempts for t in DEFAULT_TIERS} == {"vip": ("batch", "async", "realtime"),
                                                           "realtime": ("batch", "async"), "async": (), "batch": ()}
    assert {t.name: t.preempt_after_ms for t in DEFAULT_TIERS} == {"vip": 200, "realtime": 500, "async": None,
                                                                  "batch": None}
    # Batch's slot at once (after the first wait), the higher tiers' only near the waiter's own deadline.
    assert {t.name: t.preempt_delays_ms for t in DEFAULT_TIERS} == {"vip": (200, 300, 300), "realtime": (500, 1500),
                                                                   "async": (), "batch": ()}
    assert all(max(t.preempt_delays_ms, default=0) < t.timeout_ms for t in DEFAULT_TIERS)
    assert tier("vip", 0).get("max_inflight_share") is None  # omitted: 1.0, no preemption either way
    plain = make_config([REPLICA]).tier("batch")
    assert (plain.max_inflight_share, plain.preempt_after_ms, plain.preempts) == (1.0, None, ())
    assert (plain.preempt_delays_ms, plain.min_inflight) == ((), 0)


def test_default_tiers_guarantee_batch_one_running_slot():
    assert {t.name: t.min_inflight for t in DEFAULT_TIERS} == {"vip": 0, "realtime": 0, "async": 0, "batch": 1}
    config = parse_config({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3), "min_inflight": 2}]})
    assert config.tier("batch").min_inflight == 2 and config.tier("vip").min_inflight == 0
    delays = {**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["async", "batch"],
              "preempt_delays_ms": [100, 300]}
    config = parse_config({"replicas": [REPLICA], "tiers": [delays, tier("async", 2), tier("batch", 3)]})
    assert config.tier("vip").preempt_delays_ms == (100, 300)


def test_batch_borrows_idle_slots_which_vip_reclaims_at_once_and_lower_tiers_after_a_wait():
    assert {t.name: t.borrow for t in DEFAULT_TIERS} == {"vip": False, "realtime": False, "async": False,
                                                          "batch": True}
    assert {t.name: t.reclaim_after_ms for t in DEFAULT_TIERS} == {"vip": 0, "realtime": 500, "async": 5000,
                                                                  "batch": 0}
    plain = make_config([REPLICA]).tier("batch")
    assert (plain.borrow, plain.reclaim_after_ms) == (False, 0)  # omitted: the strict reservation
    never = parse_config({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "reclaim_after_ms": None}]})
    assert never.tier("vip").reclaim_after_ms is None


def test_preempts_round_trips_through_a_plain_mapping():
    # lab.studies.priority.study writes DEFAULT_TIERS as dataclasses.asdict (tuples) into the YAML it starts with.
    from dataclasses import asdict

    import yaml

    data = yaml.safe_load(yaml.safe_dump({"replicas": [REPLICA], "tiers": [asdict(t) for t in DEFAULT_TIERS]}))
    assert parse_config(data).tiers == DEFAULT_TIERS


def test_omitted_sections_take_defaults():
    config = parse_config({"replicas": [REPLICA]})
    assert config.tiers == DEFAULT_TIERS and config.canary.steps == (1.0, 5.0, 25.0, 50.0, 100.0)
    assert config.anonymous_tier is None  # a request without a key gets 401 unless the config says otherwise
    assert parse_config({"replicas": [REPLICA], "anonymous_tier": "batch"}).anonymous_tier == "batch"


@pytest.mark.parametrize(("data", "field"), [
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "timeout_ms": -5}]}, "tiers[0].timeout_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "max_concurency": 3}]}, "tiers[0].max_concurency"),
    ({"replicas": [REPLICA], "keys": [{"name": "k", "hash": "sha256:" + "0" * 64, "tier": "gold"}]}, "keys[0].tier"),
    ({"replicas": [REPLICA], "keys": [{"name": "k", "hash": "my-plain-key", "tier": "vip"}]}, "keys[0].hash"),
    ({"replicas": [REPLICA], "admin_key_hash": "sha256:short"}, "admin_key_hash"),
    ({"replicas": [{"version": "v1"}]}, "replicas[0].url"),
    ({"replicas": [{"url": "ftp://x", "version": "v1"}]}, "replicas[0].url"),
    ({"replicas": [REPLICA], "health": {"interval_s": "soon"}}, "health.interval_s"),
    ({"replicas": [REPLICA], "canary": {"steps": [5, 1, 100]}}, "canary.steps"),
    ({"replicas": [REPLICA], "stable_version": "v9"}, "stable_version"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "key_limit": {"requests_per_s": 1}}]},
     "tiers[0].key_limit.request_burst"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "max_inflight_share": 1.5}]}, "tiers[0].max_inflight_share"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "max_inflight_share": 0}]}, "tiers[0].max_inflight_share"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": -1}]}, "tiers[0].preempt_after_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preemptible": True}]}, "tiers[0].preemptible"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": "batch"},
                                       tier("batch", 3)]}, "tiers[0].preempts"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["batch", "batch"]},
                                       tier("batch", 3)]}, "tiers[0].preempts"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100}]}, "tiers[0].preempts"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempts": ["batch"]}, tier("batch", 3)]},
     "tiers[0].preempts"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["gold"]}]},
     "tiers[0].preempts"),
    ({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3), "preempt_after_ms": 100,
                                                        "preempts": ["vip"]}]}, "tiers[1].preempts"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["vip"]}]},
     "tiers[0].preempts"),
    ({"replicas": [REPLICA], "proxy": {"client": "httpx"}}, "proxy.client"),
    ({"replicas": [REPLICA], "tiers": [{**tier("batch", 3), "max_inflight_share": 0.5, "borrow": "yes"}]},
     "tiers[0].borrow"),
    ({"replicas": [REPLICA], "tiers": [{**tier("batch", 3), "max_inflight_share": 0.5, "borrow": 1}]},
     "tiers[0].borrow"),
    ({"replicas": [REPLICA], "tiers": [{**tier("batch", 3), "borrow": True}]}, "tiers[0].borrow"),  # share 1.0
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "reclaim_after_ms": -1}]}, "tiers[0].reclaim_after_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "reclaim_after_ms": 0.5}]}, "tiers[0].reclaim_after_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "max_inflight_share": 0.5},
                                       {**tier("batch", 3), "max_inflight_share": 0.9}]}, "tiers"),
    ({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3), "min_inflight": -1}]},
     "tiers[1].min_inflight"),
    ({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3), "min_inflight": 1.5}]},
     "tiers[1].min_inflight"),
    ({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3), "min_inflight": True}]},
     "tiers[1].min_inflight"),
    ({"replicas": [REPLICA], "tiers": [tier("vip", 0), {**tier("batch", 3, concurrency=2), "min_inflight": 3}]},
     "tiers[1].min_inflight"),
    # The minimums would hold every slot against the tiers without one (queue.max_inflight is 4).
    ({"replicas": [REPLICA], "queue": {"max_inflight": 4}, "tiers": [
        tier("vip", 0), {**tier("async", 2), "min_inflight": 2}, {**tier("batch", 3), "min_inflight": 2}]}, "tiers"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["async", "batch"],
                                        "preempt_delays_ms": [100]}, tier("async", 2), tier("batch", 3)]},
     "tiers[0].preempt_delays_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["batch"],
                                        "preempt_delays_ms": [50]}, tier("batch", 3)]}, "tiers[0].preempt_delays_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["async", "batch"],
                                        "preempt_delays_ms": [300, 100]}, tier("async", 2), tier("batch", 3)]},
     "tiers[0].preempt_delays_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_after_ms": 100, "preempts": ["batch"],
                                        "preempt_delays_ms": ["soon"]}, tier("batch", 3)]},
     "tiers[0].preempt_delays_ms"),
    ({"replicas": [REPLICA], "tiers": [{**tier("vip", 0), "preempt_delays_ms": [100]}]}, "tiers[0].preempt_delays_ms"),
    ({"replicas": [REPLICA], "anonymous_tier": "gold"}, "anonymous_tier"),
    ({"replicas": [REPLICA], "anonymous_tier": "batch",
      "keys": [{"name": "anonymous", "hash": "sha256:" + "0" * 64, "tier": "vip"}]}, "keys"),
])
def test_bad_field_is_named(data, field):
    with pytest.raises(ConfigError, match=re.escape(f"{field}:")):
        parse_config(data)


def test_make_config_helper_round_trips():
    config = make_config([REPLICA])
    assert {k.tier for k in config.keys} == {"vip", "realtime", "async", "batch"}


def test_cli_reports_a_bad_config_without_traceback(tmp_path):
    bad = tmp_path / "gateway.yaml"
    bad.write_text("replicas: [{url: 'http://127.0.0.1:1', version: v1}]\nhealth: {failure_threshold: 0}\n")
    result = subprocess.run([sys.executable, "-m", "lab", "gateway", "--config", str(bad)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "health.failure_threshold" in result.stderr and "Traceback" not in result.stderr
