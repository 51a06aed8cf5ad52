"""Named numbers and tables from a `StudyResult`: what notebook 04 records and shows.

Contract: `study_metrics(result)` flattens every run into `<policy>_<plan>_<quantity>` metrics
(e.g. `predictive_spot_vip_slo_pct`, `reactive_15s_on_demand_gpu_hours`) and adds the headline
comparisons the claims table reads:
- `peak_load_pct`: predictive (on demand), the highest 60 s mean offered load on ready capacity;
- `spot_cost_change_pct`: predictive, reserved + spot cost against all on demand (negative = cheaper);
- `reactive_decision_delay_s`: mean lateness of the reactive policies' scale-ups (seconds after the
  offered load crossed `scale_load` and stayed above); per delay as `reactive_<d>s_decision_delay_s`;
- `predictive_gpu_hours_saving_pct`: predictive against static peak, both on demand;
- `predictive_violations_vs_reactive_pct`: predictive's SLO violations relative to the best reactive.
`summary_table(result)` is one row per run for display (a pandas DataFrame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lab.studies.scaling.scenarios import StudyResult

TRACKED_TIERS = ("vip", "realtime")


def _key(run_name: str) -> str:
    return run_name.replace("/", "_")


def run_metrics(result: StudyResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, run in result.runs.items():
        k = _key(name)
        for tier in run.tiers:
            out[f"{k}_{tier.name.lower()}_slo_pct"] = 100.0 * tier.slo_attainment
        out[f"{k}_gpu_hours"] = run.cost.total_gpu_hours
        out[f"{k}_cost_usd"] = run.cost.total_cost
        out[f"{k}_slo_violations"] = run.slo_violations
        out[f"{k}_shed"] = float(sum(t.shed for t in run.tiers))
        out[f"{k}_timed_out"] = float(sum(t.timed_out for t in run.tiers))
        out[f"{k}_mean_replicas"] = float(run.timeline.alive.mean())
        out[f"{k}_interruptions"] = float(run.interruptions)
        out[f"{k}_sim_wall_s"] = run.wall_s
    return out


def study_metrics(result: StudyResult, scale_load: float = 0.85) -> dict[str, float]:
    runs, cap = result.runs, result.replica_capacity_per_s
    out = run_metrics(result)
    pred, static = runs["predictive/on_demand"], runs["static_peak/on_demand"]
    out["peak_load_pct"] = 100.0 * float(np.max(pred.timeline.demand_load(cap, 60)[60:]))
    out["spot_cost_change_pct"] = 100.0 * (runs["predictive/spot"].cost.total_cost / pred.cost.total_cost - 1)
    out["predictive_gpu_hours_saving_pct"] = 100.0 * (1 - pred.cost.total_gpu_hours / static.cost.total_gpu_hours)
    lateness_all = []
    reactive = [n for n in runs if n.startswith("reactive_") and n.endswith("/on_demand")]
    for name in reactive + ["predictive/on_demand"]:
        run = runs[name]
        ups = [d.time_s for d in run.decisions if d.action.value == "scale_up"]
        late = run.timeline.decision_lateness_s(ups, run.timeline.demand_load(cap, 10), scale_load)
        out[f"{_key(name.split('/')[0])}_decision_delay_s"] = float(np.mean(late)) if late else 0.0
        if name in reactive:
            lateness_all += late
    out["reactive_decision_delay_s"] = float(np.mean(lateness_all)) if lateness_all else 0.0
    best_reactive = min(reactive, key=lambda n: runs[n].slo_violations)
    reactive_violations = runs[best_reactive].slo_violations
    out["predictive_violations_vs_reactive_pct"] = (
        100.0 * (pred.slo_violations / reactive_violations - 1) if reactive_violations else 0.0)
    out["simulated_requests"] = float(pred.total_requests)
    out["replica_capacity_per_s"] = cap
    out["static_replicas"] = float(result.static_replicas)
    out["reserved_replicas"] = float(result.reserved_replicas)
    return out


def summary_table(result: StudyResult):
    import pandas as pd

    rows = []
    for name, run in result.runs.items():
        policy, plan = name.split("/")
        row = {"policy": policy, "plan": plan}
        for tier in run.tiers:
            row[f"{tier.name} SLO %"] = round(100.0 * tier.slo_attainment, 3)
        row.update({"violations": round(run.slo_violations), "GPU-h": round(run.cost.total_gpu_hours, 1),
                    "cost $": round(run.cost.total_cost, 1), "mean replicas": round(float(run.timeline.alive.mean()), 1),
                    "interruptions": run.interruptions, "sim s": round(run.wall_s, 2)})
        rows.append(row)
    return pd.DataFrame(rows)
