"""`lab scale simulate` says which forecaster it used, with its settings, on stdout, in its JSON and its record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [
        f"2023-11-16 18:{s // 60:02d}:{s % 60:02d}.000000,500,100" for s in range(0, 3600, 3)]
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(trace: Path, out: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[list[str], dict, dict]:
    assert main(["scale", "simulate", "--trace", str(trace), "--days", "0.05", "--rate", "5", "--history-days", "1",
                 "--out", str(out), *options]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads((out / "record.json").read_text())
    return lines, json.loads(lines[-1]), record


def test_predictive_forecasts_with_prophet_by_default_and_says_so(trace, tmp_path, capsys) -> None:
    pytest.importorskip("prophet", reason="prophet is not installed")
    lines, summary, record = simulate(trace, tmp_path / "out", capsys, "--policy", "predictive")
    assert lines[0].startswith("forecaster: prophet (daily_seasonality=True, weekly_seasonality=False, ")
    assert summary["forecaster"] == "prophet" and summary["forecaster_settings"]["uncertainty_samples"] == 200
    assert record["params"]["forecaster"] == "prophet"
    assert record["params"]["forecaster_settings"]["weekly_seasonality"] is False  # 1 day of history: no week


def test_a_baseline_forecaster_is_named_with_its_season(trace, tmp_path, capsys) -> None:
    lines, summary, record = simulate(trace, tmp_path / "out", capsys, "--policy", "predictive",
                                      "--forecaster", "seasonal_naive")
    assert lines[0] == "forecaster: seasonal_naive (season_steps=288, interval_width=0.8, step_s=300)"
    assert summary["forecaster_settings"] == {"season_steps": 288, "interval_width": 0.8, "step_s": 300}
    assert record["params"]["forecaster"] == "seasonal_naive"


def test_a_policy_that_does_not_forecast_records_no_forecaster(trace, tmp_path, capsys) -> None:
    lines, summary, record = simulate(trace, tmp_path / "out", capsys, "--policy", "reactive",
                                      "--forecaster", "seasonal_naive")
    assert lines[0] == "forecaster: none (the reactive policy does not forecast)"
    assert summary["forecaster"] == "none" and record["params"]["forecaster"] == "none"  # not the unused option
