"""Scaling policies on synthetic step and ramp loads, with decisions checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lab.scale.forecast import Forecast
from lab.scale.policy import Bounds, CooldownConfig, Static, replicas_for_rate
from lab.scale.predictive import PredictiveConfig, PredictiveStepped, RateForecast
from lab.scale.reactive import ReactiveConfig, ReactiveThreshold
from lab.scale.signals import Action, LoadSignals
from lab.scale.target_tracking import TargetTracking, TargetTrackingConfig


def signals(t: float, running: int = 0, queue: int = 0, ready: int = 4, starting: int = 0,
            rate: float = 0.0, slots: int = 10) -> LoadSignals:
    return LoadSignals(t, rate, queue, running, 0.5, ready, starting, slots)


def test_replicas_for_rate() -> None:
    assert replicas_for_rate(85.0, 10.0, 0.85) == 10  # exactly at the target, no rounding up
    assert replicas_for_rate(85.1, 10.0, 0.85) == 11
    assert replicas_for_rate(0.0, 10.0, 0.85) == 0


def test_reactive_waits_its_decision_delay_on_a_step() -> None:
    policy = ReactiveThreshold(ReactiveConfig(decision_delay_s=15, target_utilization=0.7))
    # Step at t=100: 4 replicas x 10 slots, demand jumps from 20 (0.5) to 36 running + 4 queued (1.0).
    assert policy.decide(signals(99, running=20)).action is Action.HOLD
    for t in range(100, 115):
        assert policy.decide(signals(t, running=36, queue=4)).action is Action.HOLD, t
    decision = policy.decide(signals(115, running=36, queue=4))
    assert decision.action is Action.SCALE_UP
    assert decision.desired_replicas == 6  # ceil(40 / (10 * 0.7)) = ceil(5.71)
    # Next tick, with the 2 new replicas starting: no second order until another full delay.
    assert policy.decide(signals(116, running=40, queue=10, starting=2)).action is Action.HOLD


def test_reactive_scale_down_uses_the_largest_need_of_its_window() -> None:
    cfg = ReactiveConfig(decision_delay_s=10, cooldown=CooldownConfig(scale_down_cooldown_s=60))
    policy = ReactiveThreshold(cfg)
    policy.decide(signals(0, running=14, ready=4))  # need ceil(14/7) = 2, utilization 0.35 < 0.5
    for t in range(1, 10):
        assert policy.decide(signals(t, running=7, ready=4)).action is Action.HOLD, t  # need 1
    decision = policy.decide(signals(10, running=7, ready=4))  # below for 10 s: the window's max need
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_DOWN, 2)
    for t in range(11, 70):  # cool-down of 60 s after the change
        assert policy.decide(signals(t, running=7, ready=2)).action is Action.HOLD, t
    decision = policy.decide(signals(70, running=7, ready=2))  # t=0's need of 2 left the window
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_DOWN, 1)


def test_reactive_respects_bounds_and_step_limit() -> None:
    policy = ReactiveThreshold(ReactiveConfig(decision_delay_s=0, max_step_factor=2.0, bounds=Bounds(1, 5)))
    decision = policy.decide(signals(0, running=40, queue=400, ready=2))
    assert decision.desired_replicas == 4  # needs 63, step limit 2 x 2 = 4, within bounds 5
    policy = ReactiveThreshold(ReactiveConfig(decision_delay_s=0, max_step_factor=4.0, bounds=Bounds(1, 5)))
    assert policy.decide(signals(0, running=40, queue=400, ready=2)).desired_replicas == 5


def ramp_forecast(rates: list[float], step_s: float = 60.0) -> RateForecast:
    values = np.asarray(rates, dtype=float)
    return RateForecast(Forecast(0.0, step_s, values, values * 0.9, values, 0.8))


def test_predictive_stepped_warns_at_70_and_scales_at_85_with_15_headroom() -> None:
    # 4 replicas of 10 requests/s: 40/s of capacity. Forecast ramps 20 -> 29 -> 35 per minute.
    cfg = PredictiveConfig(replica_capacity_per_s=10.0, replica_startup_s=60.0, horizon_s=60.0,
                           cooldown=CooldownConfig(scale_down_cooldown_s=1e9))
    policy = PredictiveStepped(cfg, ramp_forecast([20, 27, 29, 35, 35]))
    assert policy.decide(signals(0, rate=20)).action is Action.HOLD  # peak(0..60 s) = 27: load 0.675
    decision = policy.decide(signals(60, rate=27))  # peak 29: load 0.725 >= 0.70
    assert (decision.action, decision.desired_replicas) == (Action.WARN, 4)
    decision = policy.decide(signals(120, rate=29))  # peak 35: load 0.875 >= 0.85
    assert decision.action is Action.SCALE_UP
    assert decision.desired_replicas == 5  # ceil(35 / (10 * 0.85)) = ceil(4.12): 15 % headroom


def test_predictive_follows_a_measured_burst_the_forecast_missed() -> None:
    cfg = PredictiveConfig(replica_capacity_per_s=10.0, replica_startup_s=60.0, horizon_s=60.0)
    policy = PredictiveStepped(cfg, ramp_forecast([10, 10, 10]))
    decision = policy.decide(signals(0, rate=50))
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_UP, 6)  # ceil(50 / 8.5)


def test_predictive_scales_down_after_cooldown_keeping_headroom() -> None:
    cfg = PredictiveConfig(replica_capacity_per_s=10.0, replica_startup_s=60.0, horizon_s=60.0,
                           cooldown=CooldownConfig(scale_down_cooldown_s=0))
    policy = PredictiveStepped(cfg, ramp_forecast([17, 17, 17]))
    decision = policy.decide(signals(0, rate=17, ready=10))  # load 0.17
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_DOWN, 2)  # 17 / 8.5 = 2


def test_predictive_horizon_must_cover_startup() -> None:
    with pytest.raises(ValueError, match="replica_startup_s"):
        PredictiveConfig(replica_capacity_per_s=10.0, replica_startup_s=120.0, horizon_s=60.0)


def test_target_tracking_is_proportional_to_rate() -> None:
    policy = TargetTracking(TargetTrackingConfig(10.0, target_load=0.7,
                                                 cooldown=CooldownConfig(scale_down_cooldown_s=300)))
    decision = policy.decide(signals(0, rate=100.0))
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_UP, 15)  # ceil(100/7)
    assert policy.decide(signals(10, rate=10.0, ready=15)).action is Action.HOLD  # in cool-down
    decision = policy.decide(signals(300, rate=10.0, ready=15))
    assert (decision.action, decision.desired_replicas) == (Action.SCALE_DOWN, 2)


def test_static_always_asks_for_its_count() -> None:
    assert Static(7).decide(signals(0, ready=3)).desired_replicas == 7


def test_rate_forecast_peak_over_the_horizon() -> None:
    forecast = ramp_forecast([1, 5, 2, 3, 9], step_s=60.0)
    assert forecast.peak_rate_per_s(0, 60) == 5  # points 0..1
    assert forecast.peak_rate_per_s(130, 60) == 3  # points 2..3
    assert forecast.peak_rate_per_s(250, 600) == 9  # past the end: the last value holds
    with pytest.raises(ValueError, match="outside"):
        forecast.peak_rate_per_s(300, 60)


@pytest.mark.parametrize("make", [
    lambda cd: ReactiveThreshold(ReactiveConfig(decision_delay_s=15, cooldown=cd)),
    lambda cd: TargetTracking(TargetTrackingConfig(10.0, cooldown=cd)),
    lambda cd: PredictiveStepped(PredictiveConfig(10.0, 60.0, horizon_s=60.0, cooldown=cd), ramp_forecast([10, 10])),
], ids=["reactive", "target_tracking", "predictive"])
def test_reset_makes_a_policy_decide_like_a_fresh_one(make) -> None:
    # Overload (utilization 1.0, 100 requests/s on 4 replicas): each policy scales up once, then its
    # scale-up cool-down (never over) holds it, until reset() forgets the change.
    steps = [signals(t, running=40, rate=100.0) for t in (0, 15)]
    policy = make(CooldownConfig(scale_up_cooldown_s=1e9))
    fresh = [policy.decide(s) for s in steps]
    assert Action.SCALE_UP in [d.action for d in fresh]
    assert Action.SCALE_UP not in [policy.decide(s).action for s in steps]  # in cool-down: state matters
    policy.reset()
    assert [policy.decide(s) for s in steps] == fresh
