"""What `lab scale simulate` does, as a function: build the workload, the policy, run, summarise.

Contract: `run_simulate_command(SimulateRequest(...), out_dir=None)` returns a JSON-ready summary
dict (`policy`, `requests`, per-tier counts and SLO %, `gpu_hours`, `cost_usd`, `sim_wall_s`,
`simulated_s`, ...) and, with `out_dir`, writes a `ResultRecord` (experiment `scale_simulate`)
there. Predictive runs simulate `history_days` more days first and forecast from them; only the
last `days` are simulated. The same code serves the CLI and tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError


@dataclass(frozen=True)
class SimulateRequest:
    trace: Path | None = None
    days: float = 1.0
    rate_per_s: float = 100.0
    flash_sales_per_day: float = 1.0
    policy: str = "reactive"
    replicas: int = 0
    reactive_delay_s: float = 15.0
    history_days: int = 2
    forecaster: str = "seasonal_naive"
    use_spot: bool = False
    reserved_replicas: int = 0
    startup_s: float = 60.0
    profile: Path | None = None
    seed: int = 0


def _policy(request: SimulateRequest, workload, window_start: int, capacity: float):
    import dataclasses

    from lab.scale.forecast import SeasonalNaive
    from lab.scale.policy import Bounds, Static, replicas_for_rate
    from lab.scale.predictive import PredictiveConfig, PredictiveStepped, RateForecast
    from lab.scale.reactive import ReactiveConfig, ReactiveThreshold
    from lab.scale.target_tracking import TargetTracking, TargetTrackingConfig

    bounds = Bounds(1, 1000)
    if request.policy == "static":
        peak = workload.rate_series(60).values.max()
        return Static(request.replicas or replicas_for_rate(peak, capacity, 0.85), name="static")
    if request.policy == "reactive":
        return ReactiveThreshold(ReactiveConfig(decision_delay_s=request.reactive_delay_s, bounds=bounds))
    if request.policy == "target":
        return TargetTracking(TargetTrackingConfig(capacity, target_load=0.85, bounds=bounds))
    step = 300
    history = workload.rate_series(step, 0, window_start)
    horizon = (workload.duration_s - window_start) // step + 1
    if request.forecaster == "prophet":
        from lab.scale.prophet_forecaster import ProphetConfig, ProphetForecaster

        forecaster = ProphetForecaster(ProphetConfig(weekly_seasonality=request.history_days >= 14))
    else:
        forecaster = SeasonalNaive(season_steps=86_400 // step)
    forecast = forecaster.fit(history).predict(horizon)
    forecast = dataclasses.replace(forecast, start_s=forecast.start_s - window_start)
    config = PredictiveConfig(capacity, request.startup_s, horizon_s=max(300.0, request.startup_s), bounds=bounds)
    return PredictiveStepped(config, RateForecast(forecast))


def run_simulate_command(request: SimulateRequest, out_dir: Path | None = None) -> dict[str, Any]:
    import dataclasses

    from lab.scale.cost import FleetPlan
    from lab.scale.engine_profile import default_profile, load_profile
    from lab.scale.simulator import SimConfig, simulate
    from lab.scale.trace import read_trace
    from lab.scale.workload import DAY_S, WorkloadSpec, build_workload

    if request.policy == "predictive" and request.history_days < 1:
        raise LabError("predictive needs --history-days >= 1 to forecast from")
    history_days = request.history_days if request.policy == "predictive" else 0
    spec = WorkloadSpec(days=request.days + history_days, base_rate_per_s=request.rate_per_s,
                        flash_sales_per_day=request.flash_sales_per_day, seed=request.seed)
    workload = build_workload(read_trace(request.trace), spec)
    profile = load_profile(request.profile) if request.profile else default_profile()
    capacity = profile.capacity_per_s(float(workload.prompt_tokens.mean()), float(workload.output_tokens.mean()))
    start = int(history_days * DAY_S)
    policy = _policy(request, workload, start, capacity)
    window = dataclasses.replace(workload, arrivals_per_s=workload.arrivals_per_s[start:],
                                 expected_rate_per_s=workload.expected_rate_per_s[start:])
    plan = FleetPlan(reserved_replicas=request.reserved_replicas, use_spot=request.use_spot,
                     startup_s=request.startup_s)
    first_rate = float(window.arrivals_per_s[:60].mean())
    initial = max(1, int(first_rate / (capacity * 0.85)) + 1)
    result = simulate(window, policy, SimConfig(plan=plan, profile=profile, initial_replicas=initial,
                                                seed=request.seed))
    summary = {
        "policy": result.policy, "plan": plan.label, "requests": result.total_requests,
        "simulated_s": window.duration_s, "sim_wall_s": round(result.wall_s, 3),
        "gpu_hours": result.cost.total_gpu_hours, "cost_usd": result.cost.total_cost,
        "slo_violations": result.slo_violations, "scale_decisions": len(result.decisions),
        "interruptions": result.interruptions, "replica_capacity_per_s": capacity,
        "tiers": [{"name": t.name, "arrived": t.arrived, "served": t.served, "shed": t.shed,
                   "timed_out": t.timed_out, "slo_pct": 100.0 * t.slo_attainment} for t in result.tiers],
    }
    if out_dir is not None:
        _write_record(request, workload, summary, out_dir)
    return summary


def _write_record(request: SimulateRequest, workload, summary: dict[str, Any], out_dir: Path) -> None:
    from lab.track.environment import collect_environment
    from lab.track.record import ResultRecord

    params = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items()}
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for tier in summary["tiers"]:
        metrics[f"{tier['name'].lower()}_slo_pct"] = tier["slo_pct"]
    out_dir.mkdir(parents=True, exist_ok=True)
    ResultRecord("scale_simulate", {**params, **workload.params()}, metrics,
                 environment=collect_environment()).save(out_dir / "record.json")
