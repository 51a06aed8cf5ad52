"""Forecasters of a load series behind one protocol, and the baselines.

Contract: a `Forecaster` is fitted on a `Series` (timestamps in seconds, evenly spaced by `step_s`,
and values, e.g. requests/s per minute) and then predicts the next `horizon_steps` points as a
`Forecast` (mean plus a lower/upper interval at the forecaster's `interval_width`). `fit` returns
the forecaster itself so `f.fit(h).predict(n)` reads as one line. Baselines here:
- `LastValue`: the last observation, flat; interval from the spread of one-step changes.
- `SeasonalNaive`: the value one season ago (e.g. a day); interval from seasonal differences.
- `EWMA`: an exponentially weighted mean, flat; interval from the residuals of the smoothing.
Intervals of the baselines assume normal errors (a z-score for `interval_width`); they exist so
interval coverage can be compared with Prophet's, not as careful uncertainty models.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Series:
    """An evenly spaced series: `values[i]` observed at `start_s + i * step_s` (seconds)."""

    start_s: float
    step_s: float
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {self.step_s}")
        object.__setattr__(self, "values", np.asarray(self.values, dtype=float))
        if self.values.ndim != 1 or len(self.values) == 0:
            raise ValueError("values must be a non-empty 1-D array")

    @property
    def times_s(self) -> np.ndarray:
        return self.start_s + self.step_s * np.arange(len(self.values))

    @property
    def end_s(self) -> float:
        """The time just after the last point (where a forecast starts)."""
        return self.start_s + self.step_s * len(self.values)

    def split(self, n_train: int) -> tuple[Series, Series]:
        """(first n_train points, the rest): a held-out window for backtests."""
        if not 0 < n_train < len(self.values):
            raise ValueError(f"n_train must be in (0, {len(self.values)}), got {n_train}")
        rest_start = self.start_s + self.step_s * n_train
        return (Series(self.start_s, self.step_s, self.values[:n_train]),
                Series(rest_start, self.step_s, self.values[n_train:]))


@dataclass(frozen=True)
class Forecast:
    """Predicted values at `start_s + i * step_s`, with an interval [lower, upper]."""

    start_s: float
    step_s: float
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    interval_width: float  # nominal probability mass inside [lower, upper]

    @property
    def times_s(self) -> np.ndarray:
        return self.start_s + self.step_s * np.arange(len(self.mean))


class Forecaster(Protocol):
    name: str

    def fit(self, history: Series) -> Forecaster: ...

    def predict(self, horizon_steps: int) -> Forecast: ...


def _z(interval_width: float) -> float:
    if not 0 < interval_width < 1:
        raise ValueError(f"interval_width must be in (0, 1), got {interval_width}")
    return NormalDist().inv_cdf(0.5 + interval_width / 2)


def _flat(history: Series, level: float, sigma_per_step: float, horizon_steps: int,
          interval_width: float, widen: bool) -> Forecast:
    steps = np.arange(1, horizon_steps + 1)
    mean = np.full(horizon_steps, level)
    # A random walk's error grows with sqrt(steps ahead); a level estimate's does not.
    sigma = sigma_per_step * (np.sqrt(steps) if widen else np.ones(horizon_steps))
    half = _z(interval_width) * sigma
    return Forecast(history.end_s, history.step_s, mean, np.maximum(mean - half, 0.0), mean + half,
                    interval_width)


class LastValue:
    """Tomorrow looks like right now: the last observation, held flat."""

    name = "last_value"

    def __init__(self, interval_width: float = 0.8) -> None:
        self.interval_width = interval_width
        self._history: Series | None = None

    def fit(self, history: Series) -> LastValue:
        self._history = history
        return self

    def predict(self, horizon_steps: int) -> Forecast:
        h = _fitted(self._history)
        diffs = np.diff(h.values)
        sigma = float(np.std(diffs)) if len(diffs) else 0.0
        return _flat(h, float(h.values[-1]), sigma, horizon_steps, self.interval_width, widen=True)


class SeasonalNaive:
    """The value one season ago (`season_steps`, e.g. 1440 one-minute steps for a day)."""

    name = "seasonal_naive"

    def __init__(self, season_steps: int, interval_width: float = 0.8) -> None:
        if season_steps < 1:
            raise ValueError(f"season_steps must be >= 1, got {season_steps}")
        self.season_steps = season_steps
        self.interval_width = interval_width
        self._history: Series | None = None

    def fit(self, history: Series) -> SeasonalNaive:
        if len(history.values) < self.season_steps:
            raise ValueError(f"history of {len(history.values)} points is shorter than one season "
                             f"({self.season_steps})")
        self._history = history
        return self

    def predict(self, horizon_steps: int) -> Forecast:
        h = _fitted(self._history)
        last_season = h.values[-self.season_steps:]
        mean = np.resize(last_season, horizon_steps)  # repeats the season when horizon > season
        seasonal_diffs = h.values[self.season_steps:] - h.values[:-self.season_steps]
        sigma = float(np.std(seasonal_diffs)) if len(seasonal_diffs) else float(np.std(h.values))
        half = _z(self.interval_width) * sigma
        return Forecast(h.end_s, h.step_s, mean, np.maximum(mean - half, 0.0), mean + half,
                        self.interval_width)


class EWMA:
    """An exponentially weighted moving average with smoothing factor `alpha`, held flat."""

    name = "ewma"

    def __init__(self, alpha: float = 0.3, interval_width: float = 0.8) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.interval_width = interval_width
        self._level: float | None = None
        self._sigma = 0.0
        self._history: Series | None = None

    def fit(self, history: Series) -> EWMA:
        level = float(history.values[0])
        residuals = []
        for value in history.values[1:]:
            residuals.append(value - level)  # one-step-ahead error of the smoothed level
            level += self.alpha * (value - level)
        self._level, self._history = level, history
        self._sigma = float(np.std(residuals)) if residuals else 0.0
        return self

    def predict(self, horizon_steps: int) -> Forecast:
        h = _fitted(self._history)
        assert self._level is not None
        return _flat(h, self._level, self._sigma, horizon_steps, self.interval_width, widen=False)


def _fitted(history: Series | None) -> Series:
    if history is None:
        raise RuntimeError("call fit(history) before predict(horizon_steps)")
    return history
