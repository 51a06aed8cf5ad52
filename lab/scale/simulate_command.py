"""What `lab scale simulate` does, as a function: build the workload, the policy, run, summarise.

Contract: `run_simulate_command(SimulateRequest(...), out_dir=None)` returns a JSON-ready summary
dict (`policy`, `requests`, per-tier counts and SLO %, `gpu_hours`, `cost_usd`, `sim_wall_s`,
`simulated_s`, ...) and, with `out_dir`, writes a `ResultRecord` (experiment `scale_simulate`)
there. Predictive runs simulate `history_days` more days first and forecast from them with
`forecaster` (one of `FORECASTERS`, Prophet by default: about a second to fit two days); only the last
`days` are simulated. The summary and the record name the forecaster used and its settings
(`forecaster`, `forecaster_settings`; "none" for policies that do not forecast). The same code serves
the CLI and tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError

FORECASTERS = ("prophet", "seasonal_naive", "ewma", "last_value")  # each a `Forecaster`'s own `name`
DEFAULT_FORECASTER = "prophet"
FORECAST_STEP_S = 300  # the predictive policy forecasts requests/s per 5 minutes


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
    forecaster: str = DEFAULT_FORECASTER
    use_spot: bool = False
    reserved_replicas: int = 0
    startup_s: float = 60.0
    profile: Path | None = None
    seed: int = 0


def make_forecaster(name: str, history_days: int):
    """The `Forecaster` called `name`, set up for `history_days` days of 5-minute history."""
    import importlib.util

    from lab.scale.forecast import EWMA, LastValue, SeasonalNaive

    if name == "prophet":
        from lab.scale.prophet_forecaster import ProphetConfig, ProphetForecaster

        if importlib.util.find_spec("prophet") is None:  # the fit imports it; say so before simulating history
            others = ", ".join(f for f in FORECASTERS if f != "prophet")
            raise LabError(f"the prophet forecaster needs the prophet package (pip install prophet), or --forecaster "
                           f"one of: {others}")
        return ProphetForecaster(ProphetConfig(weekly_seasonality=history_days >= 14))  # a week needs ~2 of history
    if name == "seasonal_naive":
        return SeasonalNaive(season_steps=86_400 // FORECAST_STEP_S)  # a day ago
    if name == "ewma":
        return EWMA()
    if name == "last_value":
        return LastValue()
    raise LabError(f"unknown forecaster {name!r}; known: {list(FORECASTERS)}")


def forecaster_settings(forecaster) -> dict[str, Any]:
    """The forecaster's scalar settings (its config's, for Prophet), as a record shows them."""
    source = getattr(forecaster, "config", forecaster)
    values = asdict(source) if is_dataclass(source) else vars(source)
    settings = {k: v for k, v in values.items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
    return {**settings, "step_s": FORECAST_STEP_S}


def _policy(request: SimulateRequest, workload, window_start: int, capacity: float, forecaster):
    import dataclasses

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
    step = FORECAST_STEP_S
    history = workload.rate_series(step, 0, window_start)
    horizon = (workload.duration_s - window_start) // step + 1
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
    forecaster = make_forecaster(request.forecaster, request.history_days) if request.policy == "predictive" else None
    policy = _policy(request, workload, start, capacity, forecaster)
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
        "forecaster": forecaster.name if forecaster is not None else "none",
        "forecaster_settings": forecaster_settings(forecaster) if forecaster is not None else {},
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
    params["forecaster"] = summary["forecaster"]  # the one used: "none" when the policy does not forecast
    params["forecaster_settings"] = summary["forecaster_settings"]
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for tier in summary["tiers"]:
        metrics[f"{tier['name'].lower()}_slo_pct"] = tier["slo_pct"]
    out_dir.mkdir(parents=True, exist_ok=True)
    ResultRecord("scale_simulate", {**params, **workload.params()}, metrics,
                 environment=collect_environment()).save(out_dir / "record.json")
