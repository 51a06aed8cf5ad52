"""Plots of benchmark results, as new matplotlib `Figure`s (never pyplot's global figure).

Contract:
- `plot_latency_cdfs(results)`: empirical CDFs of TTFT, TPOT, ITL and E2E (ms), one line per
  result (e.g. per rate of a sweep), so tails are visible, not just the percentiles.
- `plot_latency_vs_rate(results, ttft_p99_slo_s=None)`: median and P99 of TTFT, TPOT and E2E
  against the offered request rate, with achieved throughput, and the SLO line when given:
  where P99 TTFT crosses it is the maximum QPS (`lab.bench.sweep.find_max_qps`).
- `plot_latency_vs_concurrency(results)`: the same against `max_concurrency` (the knee), with
  the failed share when requests failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.bench.metrics import tpot_s
from lab.bench.runner import BenchResult


def _label(result: BenchResult) -> str:
    rate = result.request_rate_per_s
    text = "trace" if math.isnan(rate) else ("rate inf" if math.isinf(rate) else f"{rate:g} req/s")
    return text + (" (partial)" if result.partial else "")


def _latencies_ms(result: BenchResult) -> dict[str, list[float]]:
    done = [r for r in result.results if r.success]
    return {
        "TTFT": [r.ttft_s * 1e3 for r in done],
        "TPOT": [t * 1e3 for t in map(tpot_s, done) if t is not None],
        "ITL": [gap * 1e3 for r in done for gap in r.itl_s],
        "E2E": [r.e2e_s * 1e3 for r in done],
    }


def plot_latency_cdfs(results: Sequence[BenchResult], title: str = "Latency CDFs") -> Figure:
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, name in zip(axes.flat, ("TTFT", "TPOT", "ITL", "E2E")):
        for result in results:
            values = np.sort(_latencies_ms(result)[name])
            if len(values):
                ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=_label(result))
        ax.set_xlabel(f"{name} [ms]")
        ax.set_ylabel("fraction of requests" if name != "ITL" else "fraction of gaps")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    if axes.flat[0].get_legend_handles_labels()[0]:  # nothing completed: no lines, no legend
        axes.flat[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return fig


def plot_latency_vs_rate(results: Sequence[BenchResult], ttft_p99_slo_s: float | None = None,
                         title: str = "Latency against load") -> Figure:
    points = sorted((r for r in results if math.isfinite(r.request_rate_per_s)), key=lambda r: r.request_rate_per_s)
    return _plot_against([r.request_rate_per_s for r in points], points, "offered request rate [req/s]",
                         ttft_p99_slo_s, title, offered=True)


def plot_latency_vs_concurrency(results: Sequence[BenchResult], ttft_p99_slo_s: float | None = None,
                                title: str = "Latency against concurrency") -> Figure:
    points = sorted((r for r in results if r.config.max_concurrency), key=lambda r: r.config.max_concurrency)
    return _plot_against([r.config.max_concurrency for r in points], points, "max requests in flight",
                         ttft_p99_slo_s, title, offered=False)


def _plot_against(xs: list[float], points: list[BenchResult], xlabel: str, ttft_p99_slo_s: float | None,
                  title: str, offered: bool) -> Figure:
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, name in zip(axes, ("ttft", "tpot", "e2e")):
        stats = [getattr(r.metrics, name) for r in points]
        ax.plot(xs, [s.median_s * 1e3 for s in stats], marker="o", label="median")
        ax.plot(xs, [s.p99_s * 1e3 for s in stats], marker="o", label="P99")
        if name == "ttft" and ttft_p99_slo_s is not None:
            ax.axhline(ttft_p99_slo_s * 1e3, color="red", linestyle="--", label="P99 SLO")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name.upper()} [ms]")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    ax = axes[3]
    ax.plot(xs, [r.metrics.request_throughput_per_s for r in points], marker="o", label="achieved")
    if offered:
        ax.plot(xs, xs, linestyle=":", color="gray", label="offered")
    failed = [r.metrics.failed / max(1, r.metrics.completed + r.metrics.failed) * 100 for r in points]
    if any(failed):
        ax.twinx().plot(xs, failed, color="red", marker="x", label="failed [%]")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("request throughput [req/s]")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    return fig
