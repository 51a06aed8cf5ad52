"""One tier table (`lab.tiers`), and every reader agrees with it: the gateway's defaults and its example
config, the fleet simulator, and the tier mixes the priority study sends."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.gateway.config import DEFAULT_TIERS, load_config
from lab.scale.tiers import default_tiers
from lab.studies.priority.study import TIER_KEYS, tier_mix, tiers_setup
from lab.tiers import TIER_NAMES, TIERS, tier

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "gateway.example.yaml"


def table(tiers) -> list[tuple]:
    return [(t.name, t.priority, t.max_concurrency, t.timeout_ms) for t in tiers]


def test_the_table_is_the_articles_for_vip_and_realtime_highest_priority_first() -> None:
    assert table(TIERS) == [("vip", 0, 32, 500), ("realtime", 1, 64, 2000), ("async", 2, 128, 30_000),
                            ("batch", 3, 32, 120_000)]
    assert TIER_NAMES == ("vip", "realtime", "async", "batch")


def test_the_gateway_defaults_and_its_example_config_agree() -> None:
    assert table(DEFAULT_TIERS) == table(TIERS)
    assert table(load_config(EXAMPLE_CONFIG).tiers) == table(TIERS)


def test_the_simulator_agrees_on_names_order_and_deadlines() -> None:
    simulated = default_tiers()
    assert [t.name for t in simulated] == list(TIER_NAMES)
    assert [(t.timeout_s, t.slo_ttft_s) for t in simulated] == [(t.timeout_s, t.timeout_s) for t in TIERS]


def test_the_priority_study_sends_one_key_per_tier_into_the_tiers_it_configures() -> None:
    assert list(TIER_KEYS) == list(TIER_NAMES)
    setup = tiers_setup(max_inflight=8)
    assert [(t["name"], t["priority"], t["max_concurrency"], t["timeout_ms"]) for t in setup.gateway_config["tiers"]] \
        == table(TIERS)
    assert {k["tier"] for k in setup.gateway_config["keys"]} == set(TIER_NAMES)
    assert [share.name for share in tier_mix({"vip": 0.5, "batch": 0.5}).tiers] == ["vip", "batch"]


def test_an_unknown_tier_is_refused_naming_the_tiers() -> None:
    with pytest.raises(ValueError, match="vip, realtime, async, batch"):
        tier("VIP")
    with pytest.raises(ValueError, match="unknown tiers"):
        tier_mix({"gold": 1.0})
    assert tier("async").timeout_s == 30.0
