"""GPU utilisation over the steady part of a run: hand-made telemetry with an idle ramp-up and a
drain tail around a busy middle; only the middle counts."""

from __future__ import annotations

import dataclasses

import pytest

from lab.bench.utilization import SteadyWindow, steady_summary, steady_window
from lab.gpu.nvml import GpuSample
from lab.gpu.telemetry import TelemetrySample, TelemetryTrace
from tests.bench.helpers import bench_result, ok


def trace(utils_pct: list[float], interval_s: float = 1.0) -> TelemetryTrace:
    samples = tuple(TelemetrySample(t_s=(i + 1) * interval_s, cpu_util_pct=10.0, mem_used_mib=100.0,
                                    gpus=(GpuSample(0, u, 1000.0, 300.0),)) for i, u in enumerate(utils_pct))
    return TelemetryTrace(interval_s, samples)


def arrivals(scheduled_s: list[float], e2e_s: float) -> list:
    return [dataclasses.replace(ok(i, 0.1, e2e_s, 4), scheduled_s=t, sent_s=t) for i, t in enumerate(scheduled_s)]


def test_the_window_runs_from_the_first_completion_to_the_last_arrival():
    assert steady_window(arrivals([0.0, 2.0, 4.0, 8.0], e2e_s=1.5)) == SteadyWindow(1.5, 8.0)
    # A slow first request: the ramp-up is cut at a quarter of the arrival span.
    assert steady_window(arrivals([0.0, 2.0, 4.0, 8.0], e2e_s=5.0)) == SteadyWindow(2.0, 8.0)
    assert steady_window(arrivals([0.0, 0.0], e2e_s=1.0)) is None  # everything at once: no arrival span


def test_steady_utilisation_leaves_out_ramp_up_and_drain():
    # Samples at t = 1..10 s: idle at 1 s, busy (90 %) from 2 s to 8 s, draining (20 %) after.
    telemetry = trace([0.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 20.0, 20.0])
    steady = steady_summary(telemetry, SteadyWindow(1.5, 8.0))
    assert steady["gpu_util_mean_pct"] == pytest.approx(90.0)
    assert steady["steady_samples"] == 7 and steady["steady_window_s"] == pytest.approx(6.5)
    assert telemetry.summary()["gpu_util_mean_pct"] == pytest.approx(67.0)  # the whole run says less


def test_without_a_steady_window_the_whole_run_is_used_and_says_so():
    telemetry = trace([50.0, 70.0])
    summary = steady_summary(telemetry, None)
    assert summary["gpu_util_mean_pct"] == pytest.approx(60.0) and summary["steady_window_s"] == 0.0
    assert steady_summary(telemetry, SteadyWindow(0.0, 1.5))["steady_window_s"] == 0.0  # one sample is too few


def test_bench_results_record_the_steady_telemetry_beside_the_whole_run():
    result = dataclasses.replace(bench_result(1.0, [0.1, 0.1]), telemetry=trace([10.0, 80.0]))
    flat = result.flat_metrics()
    assert flat["telemetry.gpu_util_mean_pct"] == pytest.approx(45.0)
    assert "telemetry.steady.gpu_util_mean_pct" in flat and "telemetry.steady.steady_samples" in flat
