"""Forecasters: baselines by hand, backtest arithmetic, and Prophet beating last-value on seasonality."""

from __future__ import annotations

import numpy as np
import pytest

from lab.scale.backtest import backtest, coverage_pct, mape_pct
from lab.scale.forecast import EWMA, LastValue, SeasonalNaive, Series


def test_last_value_holds_the_last_observation_flat() -> None:
    f = LastValue().fit(Series(0, 60, [1.0, 3.0, 2.0])).predict(3)
    assert f.mean.tolist() == [2.0, 2.0, 2.0]
    assert f.start_s == 180 and f.step_s == 60
    # Random-walk interval: widens with sqrt(steps ahead).
    half = f.upper - f.mean
    assert half[3 - 1] == pytest.approx(half[0] * np.sqrt(3))


def test_seasonal_naive_repeats_the_last_season() -> None:
    f = SeasonalNaive(season_steps=3).fit(Series(0, 1, [1, 2, 3, 4, 5, 6])).predict(5)
    assert f.mean.tolist() == [4, 5, 6, 4, 5]


def test_ewma_level_by_hand() -> None:
    # level: 10 -> 10 + 0.5*(20-10) = 15 -> 15 + 0.5*(10-15) = 12.5
    f = EWMA(alpha=0.5).fit(Series(0, 1, [10, 20, 10])).predict(2)
    assert f.mean.tolist() == [12.5, 12.5]


def test_mape_and_coverage_by_hand() -> None:
    assert mape_pct(np.array([100.0, 200.0]), np.array([110.0, 150.0])) == pytest.approx((10 + 25) / 2)
    # Points below min_actual are ignored, not divided by.
    assert mape_pct(np.array([0.0, 100.0]), np.array([5.0, 90.0]), min_actual=1.0) == pytest.approx(10.0)
    assert coverage_pct(np.array([1.0, 5.0, 9.0, 3.0]), np.full(4, 2.0), np.full(4, 8.0)) == 50.0


def test_backtest_folds_cover_the_end_of_the_series() -> None:
    series = Series(0, 1, np.arange(20, dtype=float))
    result = backtest(lambda: LastValue(), series, n_folds=2, horizon_steps=5)
    assert [f.train_end_s for f in result.folds] == [10.0, 15.0]
    # Fold 2 trains on 0..14, predicts 14 for actual 15..19.
    assert result.folds[1].mape_pct == pytest.approx(100 * np.mean([1 / 15, 2 / 16, 3 / 17, 4 / 18, 5 / 19]))


def test_prophet_beats_last_value_on_a_daily_cycle() -> None:
    from lab.scale.prophet_forecaster import ProphetForecaster, ProphetConfig

    rng = np.random.default_rng(0)
    steps_per_day = 96  # 15-minute steps keep the fit under a couple of seconds
    t = np.arange(4 * steps_per_day)
    values = 50 + 30 * np.sin(2 * np.pi * t / steps_per_day) + rng.normal(0, 2, len(t))
    series = Series(0, 900, values)
    make = lambda: ProphetForecaster(ProphetConfig(weekly_seasonality=False))  # noqa: E731
    prophet = backtest(make, series, n_folds=1, horizon_steps=steps_per_day)
    last = backtest(lambda: LastValue(), series, n_folds=1, horizon_steps=steps_per_day)
    assert prophet.mape_pct < 10 < last.mape_pct
    assert prophet.coverage_pct > 60  # nominal 80 %: the interval means something
