"""Load faults against a real gateway: an overloaded tier sends `factor` times its rate, a flash sale
bursts inside its window only, and the drill load writes the summary the probes read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.chaos import load_faults
from lab.errors import LabError
from tests.chaos.services import KEYS, Service


def test_an_overloaded_tier_sends_factor_times_its_rate(shared_service: Service, tmp_path: Path) -> None:
    out = load_faults.overload_tier(shared_service.gateway_url, "batch", KEYS["batch"], rate_per_s=2.0, factor=5.0,
                                    duration_s=2.0, summary_path=str(tmp_path / "overload.json"))
    assert (out["action"], out["backend"], out["rate_per_s"]) == ("overload_tier", "load", 10.0)
    assert 8 <= out["tiers"]["batch"]["sent"] <= 40  # Poisson(20)
    assert out["lost"] == 0 and json.loads(Path(out["summary_path"]).read_text())["summary"]["sent"] == out["sent"]


def test_a_flash_sale_bursts_inside_its_window_only(shared_service: Service, tmp_path: Path) -> None:
    path = tmp_path / "flash.json"
    load_faults.flash_sale(shared_service.gateway_url, {"vip": {"api_key": KEYS["vip"], "rate_per_s": 3.0}},
                           burst_start_s=1.0, burst_end_s=2.0, factor=8.0, duration_s=3.0, summary_path=str(path))
    saved = json.loads(path.read_text())
    start = saved["summary"]["started_monotonic_s"]
    offsets = [row["sent_at_s"] - start for row in saved["timeline"]]
    inside = sum(1.0 <= t < 2.05 for t in offsets)  # a send may lag its planned time by a few ms
    outside = len(offsets) - inside
    # per second: ~24 planned inside the 1 s window (base 3 x 8) against ~3 in the 2 s outside it
    assert inside / 1.0 > 2 * outside / 2.0


def test_the_drill_load_reports_client_side_truth(shared_service: Service) -> None:
    out = load_faults.run_drill_load(shared_service.gateway_url, shared_service.tiers(4.0), duration_s=1.5)
    assert out["sent"] == out["success"] + out["error"] + out["timeout"] + out["connection_error"] + out["lost"]
    assert out["passed"] is True and set(out["tiers"]) == set(KEYS)


@pytest.mark.parametrize(("tiers", "named"), [
    ({}, "non-empty object"),
    ({"vip": {"api_key": "k"}}, "rate_per_s must be a number > 0"),
    ({"vip": {"api_key": "k", "rate_per_s": 0}}, "rate_per_s must be a number > 0"),
    ({"vip": {"key": "k", "rate_per_s": 1}}, "expected"),
])
def test_bad_tiers_are_named(tiers: dict, named: str) -> None:
    with pytest.raises(LabError, match=named):
        load_faults.parse_tiers(tiers)


def test_a_burst_outside_the_duration_is_refused() -> None:
    with pytest.raises(LabError, match="burst_end_s <= duration_s"):
        load_faults.flash_sale("http://127.0.0.1:1", {"vip": {"api_key": None, "rate_per_s": 1}}, 2.0, 5.0,
                               duration_s=3.0)
