"""The comparison of notebook 04: forecasts, then policies x purchase plans on one workload.

Contract: `ScalingStudy` (frozen config) names a workload (trace + `WorkloadSpec`), the window to
simulate (the last `sim_hours`, starting `sim_start_hour` into the day after `history_days` days of
history), and the policy knobs. `forecast_window(workload, study)` fits Prophet and the baselines on
the history's per-`forecast_step_s` request rate and scores each on the simulated window (MAPE,
interval coverage): the held-out evaluation. `run_study(workload, study, forecast)` simulates
static peak, reactive (one per `reactive_delays_s`), target tracking and predictive (fed with the
Prophet forecast), each on demand and as reserved base + spot, and returns `StudyResult`, whose
`metrics()` are the flat, named numbers the notebook records (the claims table reads some of them).
Static peak provisioning is sized from the history's peak minute with the same headroom; the
reserved base is the replicas the forecast's (mean) trough needs. Nothing here is tuned to a target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from lab.scale.backtest import coverage_pct, mape_pct
from lab.scale.cost import FleetPlan, Prices, SpotMarket
from lab.scale.engine_profile import EngineProfile, default_profile
from lab.scale.forecast import EWMA, Forecast, LastValue, SeasonalNaive
from lab.scale.policy import Bounds, CooldownConfig, Static, replicas_for_rate
from lab.scale.predictive import PredictiveConfig, PredictiveStepped, RateForecast
from lab.scale.prophet_forecaster import Event, ProphetConfig, ProphetForecaster
from lab.scale.reactive import ReactiveConfig, ReactiveThreshold
from lab.scale.simulator import SimConfig, SimResult, simulate
from lab.scale.target_tracking import TargetTracking, TargetTrackingConfig
from lab.scale.workload import DAY_S, Workload, WorkloadSpec


@dataclass(frozen=True)
class ScalingStudy:
    workload: WorkloadSpec
    history_days: int
    sim_hours: float = 24.0
    sim_start_hour: float = 0.0
    forecast_step_s: int = 300
    reactive_delays_s: tuple[float, ...] = (15.0, 30.0)
    warn_load: float = 0.70
    scale_load: float = 0.85
    headroom: float = 0.15
    horizon_s: float = 300.0
    startup_s: float = 60.0
    max_replicas: int = 500
    forecast_knows_flash_sales: bool = True  # the marketing calendar is an events hook input
    prices: Prices = field(default_factory=Prices)
    spot: SpotMarket = field(default_factory=SpotMarket)
    profile: EngineProfile = field(default_factory=default_profile)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.history_days < 1 or self.sim_hours <= 0 or not 0 <= self.sim_start_hour < 24:
            raise ValueError("need history_days >= 1, sim_hours > 0 and 0 <= sim_start_hour < 24")
        if self.history_days * DAY_S + (self.sim_start_hour + self.sim_hours) * 3600 > self.workload.duration_s:
            raise ValueError("the workload is shorter than history_days plus the simulated window")

    @property
    def window_s(self) -> tuple[int, int]:
        start = int(self.history_days * DAY_S + self.sim_start_hour * 3600)
        return start, start + int(self.sim_hours * 3600)


@dataclass(frozen=True)
class ForecastScore:
    name: str
    forecast: Forecast
    mape_pct: float
    coverage_pct: float


@dataclass(frozen=True)
class StudyResult:
    replica_capacity_per_s: float
    static_replicas: int
    reserved_replicas: int
    runs: dict[str, SimResult]  # "<policy>/<plan>", plan in {on_demand, spot}
    wall_s: float

    def metrics(self) -> dict[str, float]:
        from lab.studies.scaling.summary import study_metrics

        return study_metrics(self)


def forecast_window(workload: Workload, study: ScalingStudy) -> dict[str, ForecastScore]:
    start, end = study.window_s
    step = study.forecast_step_s
    history = workload.rate_series(step, 0, start - start % step)
    actual = workload.rate_series(step, history.end_s.__int__(), end).values
    horizon = len(actual)
    events = tuple(Event("flash_sale", f.start_s, f.start_s + f.duration_s + 2 * f.ramp_s)
                   for f in workload.flash_sales) if study.forecast_knows_flash_sales else ()
    weekly = study.history_days >= 14  # Prophet needs about two weeks to learn a weekly cycle
    forecasters = {
        "prophet": ProphetForecaster(ProphetConfig(weekly_seasonality=weekly, events=events)),
        "last_value": LastValue(),
        "seasonal_naive": SeasonalNaive(season_steps=DAY_S // step),
        "ewma": EWMA(alpha=0.3),
    }
    scores = {}
    for name, forecaster in forecasters.items():
        forecast = forecaster.fit(history).predict(horizon)
        scores[name] = ForecastScore(name, forecast, mape_pct(actual, forecast.mean, min_actual=0.5),
                                     coverage_pct(actual, forecast.lower, forecast.upper))
    return scores


def _window(workload: Workload, start: int, end: int) -> Workload:
    return dataclasses.replace(workload, arrivals_per_s=workload.arrivals_per_s[start:end],
                               expected_rate_per_s=workload.expected_rate_per_s[start:end])


def run_study(workload: Workload, study: ScalingStudy, forecast: Forecast) -> StudyResult:
    import time

    started = time.perf_counter()
    start, end = study.window_s
    window = _window(workload, start, end)
    profile = study.profile
    capacity = profile.capacity_per_s(float(workload.prompt_tokens.mean()), float(workload.output_tokens.mean()))
    target_load = 1 - study.headroom
    history_peak = workload.rate_series(60, 0, start).values.max()
    static_replicas = replicas_for_rate(history_peak, capacity, target_load)
    shifted = dataclasses.replace(forecast, start_s=forecast.start_s - start)  # window time starts at 0
    trough = float(np.min(shifted.mean))  # reserve what the expected trough needs, no more
    reserved = replicas_for_rate(trough, capacity, target_load)
    bounds = Bounds(1, study.max_replicas)
    cooldown = CooldownConfig(scale_up_cooldown_s=0.0, scale_down_cooldown_s=300.0)
    first_rate = float(window.arrivals_per_s[:60].mean())

    def policies():
        yield Static(static_replicas, name="static_peak")
        for delay in study.reactive_delays_s:
            yield ReactiveThreshold(ReactiveConfig(decision_delay_s=delay, bounds=bounds, cooldown=cooldown),
                                    name=f"reactive_{delay:g}s")
        yield TargetTracking(TargetTrackingConfig(capacity, target_load=target_load, bounds=bounds,
                                                  cooldown=cooldown))
        yield PredictiveStepped(
            PredictiveConfig(capacity, study.startup_s, horizon_s=study.horizon_s, warn_load=study.warn_load,
                             scale_load=study.scale_load, headroom=study.headroom, bounds=bounds,
                             cooldown=cooldown),
            RateForecast(shifted, use_upper=True))

    runs = {}
    for plan_name, use_spot in (("on_demand", False), ("spot", True)):
        plan = FleetPlan(reserved_replicas=reserved if use_spot else 0, use_spot=use_spot,
                         startup_s=study.startup_s)
        for policy in policies():
            initial = static_replicas if policy.name == "static_peak" else max(
                1, replicas_for_rate(first_rate, capacity, target_load))
            config = SimConfig(plan=plan, spot=study.spot, prices=study.prices, profile=profile,
                               initial_replicas=initial, seed=study.seed)
            runs[f"{policy.name}/{plan_name}"] = simulate(window, policy, config)
    return StudyResult(capacity, static_replicas, reserved, runs, time.perf_counter() - started)
