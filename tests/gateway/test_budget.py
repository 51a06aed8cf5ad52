"""Per-tier upstream budgets: derived from the tier table, set per tier in the config, longer for whole answers."""

from __future__ import annotations

import pytest

from lab.gateway.budget import budget_of
from lab.gateway.config import (DEFAULT_TIERS, ConfigError, HealthConfig, ProxyConfig, ServerConfig, load_config,
                                parse_config)
from tests.gateway.fakes import tier
from tests.gateway.test_config import EXAMPLE

REPLICA = {"url": "http://127.0.0.1:1", "version": "v1"}


def test_defaults_are_derived_from_each_tiers_deadline():
    budgets = {t.name: budget_of(t, ProxyConfig()) for t in DEFAULT_TIERS}
    assert {n: (b.first_byte_s, b.stall_s) for n, b in budgets.items()} == {
        "vip": (10.0, 10.0), "realtime": (10.0, 10.0), "async": (120.0, 30.0), "batch": (480.0, 120.0)}
    assert all(b.first_byte_s < ProxyConfig().read_timeout_s for b in budgets.values())  # not the 600 s any more


def test_a_tier_sets_its_own_budget_and_the_example_config_derives_them():
    config = parse_config({"replicas": [REPLICA], "tiers": [
        {**tier("vip", 0, timeout_ms=500), "first_byte_timeout_ms": 2000, "stall_timeout_ms": 700},
        {**tier("batch", 3), "first_byte_timeout_ms": None}]})
    vip, batch = (budget_of(config.tier(n), config.proxy) for n in ("vip", "batch"))
    assert (vip.first_byte_s, vip.stall_s) == (2.0, 0.7)
    assert (batch.first_byte_s, batch.stall_s) == (20.0, 10.0)  # null: derived from its 5000 ms deadline
    example = load_config(EXAMPLE)
    assert example.tiers == DEFAULT_TIERS  # the example documents the budget fields as null: derived
    assert (example.health, example.proxy, example.server) == (HealthConfig(), ProxyConfig(), ServerConfig())


def test_a_whole_answer_gets_its_tokens_at_the_minimum_pace_on_top():
    budget = budget_of(DEFAULT_TIERS[0], ProxyConfig(min_tokens_per_s=4.0))
    assert budget.first_byte_s_for(stream=True, max_tokens=256) == 10.0
    assert budget.first_byte_s_for(stream=False, max_tokens=256) == 10.0 + 64.0


@pytest.mark.parametrize(("section", "value", "field"), [
    ("tiers", {**tier("vip", 0), "first_byte_timeout_ms": 0}, "tiers[0].first_byte_timeout_ms"),
    ("tiers", {**tier("vip", 0), "stall_timeout_ms": "10s"}, "tiers[0].stall_timeout_ms"),
    ("proxy", {"min_tokens_per_s": -1}, "proxy.min_tokens_per_s"),
    ("health", {"passive_failure_threshold": 0}, "health.passive_failure_threshold"),
])
def test_bad_budget_fields_are_named(section, value, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"replicas": [REPLICA], section: [value] if section == "tiers" else value})
