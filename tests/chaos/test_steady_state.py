"""The steady-state hypothesis: its tolerance on hand-made values, and the sample probe on a real gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.chaos import steady_state
from lab.errors import LabError
from tests.chaos.services import KEYS, Service

GOOD = {"sent": 20, "success_rate": 1.0, "lost": 0, "vip_ttft_p99_ms": 40.0}


@pytest.mark.parametrize(("change", "kwargs", "expected"), [
    ({}, {"min_success_rate": 0.99, "max_vip_ttft_p99_ms": 500}, True),
    ({"success_rate": 0.98}, {"min_success_rate": 0.99}, False),
    ({"lost": 1}, {}, False),
    ({"lost": 1}, {"max_lost": 1}, True),
    ({"vip_ttft_p99_ms": 600.0}, {"max_vip_ttft_p99_ms": 500}, False),
    ({"vip_ttft_p99_ms": None}, {"max_vip_ttft_p99_ms": 500}, False),
    ({"vip_ttft_p99_ms": None}, {}, True),
    ({"sent": 0, "success_rate": None}, {}, False),
    ({"gateway": {"success_rate": 0.98, "vip_ttfb_p99_ms": 40.0}}, {"min_gateway_success_rate": 0.99}, False),
    ({"gateway": {"success_rate": 1.0, "vip_ttfb_p99_ms": 600.0}}, {"max_gateway_vip_ttfb_p99_ms": 500}, False),
    ({"gateway": {"success_rate": 1.0, "vip_ttfb_p99_ms": 40.0}},
     {"min_gateway_success_rate": 0.99, "max_gateway_vip_ttfb_p99_ms": 500}, True),
    ({"gateway": None}, {"min_gateway_success_rate": 0.99}, False),  # asked for the gateway's view, none came
    ({"gateway": None}, {}, True),
])
def test_holds(change: dict, kwargs: dict, expected: bool) -> None:
    assert steady_state.holds({**GOOD, **change}, **kwargs) is expected


def test_holds_without_a_probe_value_is_a_mistake() -> None:
    with pytest.raises(LabError, match="checks the result of"):
        steady_state.holds()


def test_the_sample_holds_on_a_healthy_service(shared_service: Service) -> None:
    value = steady_state.steady_state(shared_service.gateway_url, shared_service.tiers(5.0), duration_s=1.5)
    assert value["sent"] > 0 and value["vip_ttft_p99_ms"] is not None
    assert steady_state.holds(value, min_success_rate=0.99)
    gateway = value["gateway"]  # the gateway's own counters over the same window count the same requests
    assert gateway["counted"] == value["sent"] and gateway["success_rate"] == 1.0
    assert gateway["vip_ttfb_p99_ms"] is not None


def test_the_sample_deviates_when_a_key_is_refused(shared_service: Service) -> None:
    tiers = {"vip": {"api_key": KEYS["vip"], "rate_per_s": 5.0}, "batch": {"api_key": "sk-wrong", "rate_per_s": 5.0}}
    value = steady_state.steady_state(shared_service.gateway_url, tiers, duration_s=1.5)
    assert value["tiers"]["batch"]["success_rate"] == 0.0 and "http_401:invalid_api_key" in value["error_types"]
    assert not steady_state.holds(value, min_success_rate=0.99)


def test_lost_requests_is_zero_before_any_drill_and_the_count_after(tmp_path: Path) -> None:
    path = tmp_path / "drill.json"
    assert steady_state.lost_requests(str(path)) == 0 and steady_state.drill_success_rate(str(path)) == 1.0
    path.write_text(json.dumps({"summary": {"lost": 2, "success_rate": 0.5, "tiers": {"vip": {"success_rate": 0.25}}}}))
    assert steady_state.lost_requests(str(path)) == 2
    assert steady_state.drill_success_rate(str(path), "vip") == 0.25


def test_a_file_that_is_not_a_drill_summary_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text("[1, 2]")
    with pytest.raises(LabError, match="is not a drill summary"):
        steady_state.lost_requests(str(path))
