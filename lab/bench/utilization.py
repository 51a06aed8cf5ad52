"""Utilisation over the steady part of a benchmark run, without its ramp-up and drain tails.

Contract: `steady_window(results)` -> `SteadyWindow | None` — the part of a run during which the
offered load was on: from the end of the first completed request (or a quarter of the arrival
span, whichever comes first: before that the server has held load for less than one request's
latency) to the last planned arrival (after it the server only drains what is queued). None when
the arrivals span no time (everything sent at once: a concurrency-knee point) or nothing
completed. `steady_summary(telemetry, window)` is `TelemetryTrace.summary()` over the samples
inside the window (at least `MIN_STEADY_SAMPLES`), else over the whole run, with
`steady_window_s` (0.0 when the whole run was used) and `steady_samples` beside it, so a record
says which one it quotes. NVML's utilisation is the share of its own sample period in which a
kernel ran; a mean over the steady window is the number to hold against the article's 89 %.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lab.bench.client import RequestResult
from lab.gpu.telemetry import TelemetryTrace

MIN_STEADY_SAMPLES = 2
RAMP_SHARE_OF_SPAN = 0.25  # the ramp-up never takes more than this share of the arrival span


@dataclass(frozen=True)
class SteadyWindow:
    start_s: float  # from the start of the run (the sampler starts with it)
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def steady_window(results: Sequence[RequestResult]) -> SteadyWindow | None:
    """See the module docstring."""
    if not results:
        return None
    span_end_s = max(r.scheduled_s for r in results)
    ends = [r.sent_s + r.e2e_s for r in results if r.success and r.e2e_s is not None]
    if span_end_s <= 0 or not ends:
        return None
    start_s = min(min(ends), RAMP_SHARE_OF_SPAN * span_end_s)
    return SteadyWindow(start_s, span_end_s)


def steady_summary(telemetry: TelemetryTrace, window: SteadyWindow | None) -> dict[str, float]:
    """See the module docstring."""
    inside = () if window is None else tuple(
        s for s in telemetry.samples if window.start_s <= s.t_s <= window.end_s)
    if len(inside) >= MIN_STEADY_SAMPLES:
        summary = TelemetryTrace(telemetry.interval_s, inside).summary()
        summary["steady_window_s"] = window.duration_s
    else:
        summary = telemetry.summary()
        summary["steady_window_s"] = 0.0
    summary["steady_samples"] = summary.pop("samples")
    summary.pop("duration_s", None)
    return summary
