"""The notebook's study end to end at tiny scale, the claims it feeds, and `lab scale simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab.report.claims import CLAIMS
from lab.scale.forecast import SeasonalNaive
from lab.studies.scaling.scenarios import ScalingStudy, run_study
from lab.scale.trace import Trace
from lab.scale.workload import DAY_S, WorkloadSpec, build_workload


@pytest.fixture(scope="module")
def study_result():
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 3600, 3600))
    trace = Trace(arrivals, rng.integers(200, 2000, 3600), rng.integers(50, 400, 3600), "synthetic")
    spec = WorkloadSpec(days=2, base_rate_per_s=8, flash_sales_per_day=0, seed=1)
    workload = build_workload(trace, spec)
    study = ScalingStudy(spec, history_days=1, sim_hours=2, sim_start_hour=8, forecast_step_s=300)
    history = workload.rate_series(300, 0, DAY_S)
    forecast = SeasonalNaive(season_steps=288).fit(history).predict(288)
    return run_study(workload, study, forecast)


def test_every_policy_and_plan_conserves_requests(study_result) -> None:
    assert len(study_result.runs) == 10  # 5 policies x 2 plans
    for name, run in study_result.runs.items():
        assert all(t.conserved for t in run.tiers), name


def test_the_scaling_claims_find_their_metrics(study_result) -> None:
    metrics = study_result.metrics()
    for claim in CLAIMS:
        if claim.experiment == "04_predictive_scaling":
            assert claim.metric in metrics, claim.id
    # Spot + reserved is cheaper than on demand for the same simulated traffic.
    assert metrics["spot_cost_change_pct"] < 0
    assert metrics["static_peak_on_demand_gpu_hours"] == pytest.approx(2 * metrics["static_replicas"])


def test_lab_scale_simulate_prints_a_json_summary(tmp_path: Path, capsys) -> None:
    from lab.cli import main

    trace = tmp_path / "trace.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [
        f"2023-11-16 18:{s // 60:02d}:{s % 60:02d}.000000,500,100" for s in range(0, 3600, 3)]
    trace.write_text("\n".join(lines) + "\n")
    assert main(["scale", "simulate", "--trace", str(trace), "--days", "0.05", "--rate", "5",
                 "--policy", "predictive", "--history-days", "1", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["policy"] == "predictive" and summary["simulated_s"] == 4320
    assert summary["requests"] > 0 and summary["sim_wall_s"] > 0
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["experiment"] == "scale_simulate" and record["metrics"]["requests"] == summary["requests"]
