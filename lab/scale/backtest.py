"""Backtests of forecasters on held-out windows: MAPE and interval coverage.

Contract: `backtest(make_forecaster, series, n_folds, horizon_steps)` cuts `n_folds` rolling
origins off the end of `series` (each fold trains on everything before its window and predicts
the next `horizon_steps` points), and returns a `BacktestResult` with one `FoldScore` per fold
and their means. MAPE ignores points whose actual value is below `min_actual` (a near-zero
denominator says nothing about a load forecast); coverage is the share of actual points inside
[lower, upper], to be compared with the forecaster's nominal `interval_width`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lab.scale.forecast import Forecast, Forecaster, Series


@dataclass(frozen=True)
class FoldScore:
    train_end_s: float
    horizon_steps: int
    mape_pct: float
    coverage_pct: float
    interval_width: float


@dataclass(frozen=True)
class BacktestResult:
    forecaster: str
    folds: tuple[FoldScore, ...]
    last_forecast: Forecast  # the last fold's prediction, for plots

    @property
    def mape_pct(self) -> float:
        return float(np.mean([f.mape_pct for f in self.folds]))

    @property
    def coverage_pct(self) -> float:
        return float(np.mean([f.coverage_pct for f in self.folds]))


def mape_pct(actual: np.ndarray, predicted: np.ndarray, min_actual: float = 1e-9) -> float:
    actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
    keep = np.abs(actual) >= min_actual
    if not keep.any():
        raise ValueError("every actual value is below min_actual: MAPE is undefined")
    return float(100.0 * np.mean(np.abs(predicted[keep] - actual[keep]) / np.abs(actual[keep])))


def coverage_pct(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    actual = np.asarray(actual, float)
    return float(100.0 * np.mean((actual >= lower) & (actual <= upper)))


def backtest(make_forecaster: Callable[[], Forecaster], series: Series, n_folds: int,
             horizon_steps: int, min_actual: float = 1e-9) -> BacktestResult:
    if n_folds < 1 or horizon_steps < 1:
        raise ValueError("n_folds and horizon_steps must be >= 1")
    n = len(series.values)
    first_origin = n - n_folds * horizon_steps
    if first_origin < 2:
        raise ValueError(f"{n} points cannot hold {n_folds} folds of {horizon_steps} plus a training window")
    folds, forecast, name = [], None, "?"
    for k in range(n_folds):
        origin = first_origin + k * horizon_steps
        train, rest = series.split(origin)
        actual = rest.values[:horizon_steps]
        forecaster = make_forecaster()
        name = forecaster.name
        forecast = forecaster.fit(train).predict(horizon_steps)
        folds.append(FoldScore(
            train_end_s=train.end_s,
            horizon_steps=horizon_steps,
            mape_pct=mape_pct(actual, forecast.mean, min_actual),
            coverage_pct=coverage_pct(actual, forecast.lower, forecast.upper),
            interval_width=forecast.interval_width,
        ))
    assert forecast is not None
    return BacktestResult(name, tuple(folds), forecast)
