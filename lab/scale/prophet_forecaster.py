"""Prophet behind the `Forecaster` protocol: daily and weekly seasonality, events, intervals.

Contract: `ProphetForecaster(ProphetConfig(...)).fit(history).predict(horizon_steps)` returns a
`Forecast` whose interval is Prophet's uncertainty interval at `interval_width`. Series times are
seconds since `epoch` (a pandas timestamp, by default a Monday 00:00, so "day 5" is a Saturday and
the weekly term means something). Two hooks for known events:
- `events`: `Event(name, start_s, end_s)` windows (a flash sale, a launch) become 0/1 regressors,
  known for the past and the future, so Prophet learns each event name's effect from history;
- `holidays`: a Prophet holidays DataFrame (`holiday`, `ds`, optional windows), passed through.
Fitting is offline (seconds, not per control tick); cmdstanpy's and Prophet's chatter is silenced
only for the duration of the import and the fit (logger levels are restored afterwards).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.scale.forecast import Forecast, Series

_NOISY_LOGGERS = ("cmdstanpy", "prophet", "prophet.plot", "prophet.models")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    previous = [(lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        # cmdstanpy resets its own logger's level when it first runs, so disable it outright too.
        lg.setLevel(logging.CRITICAL)
        lg.disabled = True
    try:
        with warnings.catch_warnings():
            # Prophet's own pandas deprecations: not actionable here.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, (level, disabled) in zip(loggers, previous):
            lg.setLevel(level)
            lg.disabled = disabled


@dataclass(frozen=True)
class Event:
    """A known window of unusual traffic: [start_s, end_s) in series seconds."""

    name: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"event name must be an identifier (it names a regressor): {self.name!r}")
        if self.end_s <= self.start_s:
            raise ValueError(f"event {self.name!r} must end after it starts")


@dataclass(frozen=True)
class ProphetConfig:
    daily_seasonality: bool = True
    weekly_seasonality: bool = True  # needs about two weeks of history to mean much
    seasonality_mode: str = "multiplicative"  # traffic envelopes scale the load, they do not add to it
    interval_width: float = 0.8
    uncertainty_samples: int = 200  # Prophet's default 1000 costs seconds per predict for little gain
    changepoint_prior_scale: float = 0.05
    epoch: str = "2023-11-13 00:00:00"  # a Monday: series second 0
    events: tuple[Event, ...] = ()
    holidays: Any = None  # a pandas DataFrame in Prophet's holidays format, or None
    extra: dict[str, Any] = field(default_factory=dict)  # other Prophet(...) keyword arguments

    def __post_init__(self) -> None:
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ValueError(f"seasonality_mode must be additive or multiplicative, got {self.seasonality_mode!r}")
        if not 0 < self.interval_width < 1:
            raise ValueError(f"interval_width must be in (0, 1), got {self.interval_width}")
        if self.uncertainty_samples < 1:
            raise ValueError("uncertainty_samples must be >= 1 (Prophet gives no interval otherwise)")
        object.__setattr__(self, "events", tuple(self.events))


class ProphetForecaster:
    name = "prophet"

    def __init__(self, config: ProphetConfig | None = None) -> None:
        self.config = config or ProphetConfig()
        self._model: Any = None
        self._history: Series | None = None

    def _frame(self, times_s: np.ndarray) -> Any:
        import pandas as pd

        frame = pd.DataFrame({"ds": pd.Timestamp(self.config.epoch) + pd.to_timedelta(times_s, unit="s")})
        for name in self._event_names():
            windows = [e for e in self.config.events if e.name == name]
            active = np.zeros(len(times_s))
            for e in windows:
                active[(times_s >= e.start_s) & (times_s < e.end_s)] = 1.0
            frame[name] = active
        return frame

    def _event_names(self) -> list[str]:
        return sorted({e.name for e in self.config.events})

    def fit(self, history: Series) -> ProphetForecaster:
        with _quiet_logs():
            from prophet import Prophet

            cfg = self.config
            model = Prophet(
                daily_seasonality=cfg.daily_seasonality,
                weekly_seasonality=cfg.weekly_seasonality,
                yearly_seasonality=False,  # multi-day workloads never span a year
                seasonality_mode=cfg.seasonality_mode,
                interval_width=cfg.interval_width,
                uncertainty_samples=cfg.uncertainty_samples,
                changepoint_prior_scale=cfg.changepoint_prior_scale,
                holidays=cfg.holidays,
                **cfg.extra,
            )
            for name in self._event_names():
                model.add_regressor(name, mode="multiplicative")
            frame = self._frame(history.times_s)
            frame["y"] = history.values
            model.fit(frame)
        self._model, self._history = model, history
        return self

    def predict(self, horizon_steps: int) -> Forecast:
        if self._model is None or self._history is None:
            raise RuntimeError("call fit(history) before predict(horizon_steps)")
        h = self._history
        times_s = h.end_s + h.step_s * np.arange(horizon_steps)
        with _quiet_logs():
            out = self._model.predict(self._frame(times_s))
        # Load is never negative; Prophet's additive noise model does not know that.
        clip = lambda column: np.maximum(out[column].to_numpy(dtype=float), 0.0)  # noqa: E731
        return Forecast(h.end_s, h.step_s, clip("yhat"), clip("yhat_lower"), clip("yhat_upper"),
                        self.config.interval_width)


def prophet_forecaster(events: Sequence[Event] = (), **config: Any) -> ProphetForecaster:
    """Shorthand: `prophet_forecaster(weekly_seasonality=False)`."""
    return ProphetForecaster(ProphetConfig(events=tuple(events), **config))
