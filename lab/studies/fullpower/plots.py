"""Plots that put full power and its peers on the same axes (notebook 03).

Contract: each function takes `EngineRun`s (`lab.studies.fullpower.headline`) and returns a new matplotlib
`Figure` (never pyplot's global one), one line per engine:
- `plot_load_comparison(runs, ttft_p99_slo_s)`: P99 TTFT, P99 E2E and achieved throughput
  against the offered request rate (log-scaled rate axis: the engines differ by orders of
  magnitude), with the SLO line; where a P99 TTFT line crosses it is that engine's max QPS.
- `plot_knee(runs, knee_concurrency)`: mean and P99 E2E, and the failed share (timeouts
  included), against the cap on requests in flight, with the knee marked.
- `plot_utilization(runs)`: mean GPU utilisation (NVML) over the steady part of each point
  (`lab.bench.utilization`) against the offered rate; on a machine
  without a GPU, CPU utilisation instead, and the axis says so.
"""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from lab.studies.fullpower.headline import EngineRun, failed_pct

LABELS = {"hf_cb": "hf-cb (transformers continuous batching)", "untuned": "before tuning (lab engine, plain)",
          "baseline": "hf (transformers generate, the floor)", "fullpower": "full power (lab engine)"}


def _label(run: EngineRun) -> str:
    return LABELS.get(run.name, run.name)


def plot_load_comparison(runs: Sequence[EngineRun], ttft_p99_slo_s: float,
                         title: str = "Latency against load") -> Figure:
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ttft_ax, e2e_ax, tput_ax = fig.subplots(1, 3)
    for run in runs:
        rates = [r.request_rate_per_s for r in run.load]
        ttft_ax.plot(rates, [r.metrics.ttft.p99_s * 1e3 for r in run.load], marker="o", label=_label(run))
        e2e_ax.plot(rates, [r.metrics.e2e.p99_s * 1e3 for r in run.load], marker="o", label=_label(run))
        tput_ax.plot(rates, [r.metrics.request_throughput_per_s for r in run.load], marker="o", label=_label(run))
    ttft_ax.axhline(ttft_p99_slo_s * 1e3, color="red", linestyle="--", label="P99 TTFT SLO")
    all_rates = sorted({r.request_rate_per_s for run in runs for r in run.load})
    if all_rates:
        tput_ax.plot(all_rates, all_rates, linestyle=":", color="gray", label="offered")
    for ax, ylabel in ((ttft_ax, "P99 TTFT [ms]"), (e2e_ax, "P99 E2E [ms]"), (tput_ax, "achieved [req/s]")):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 0.5, 1, 2 rather than 5x10^-1
        ax.set_xlabel("offered request rate [req/s]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    ttft_ax.set_yscale("log")
    e2e_ax.set_yscale("log")
    fig.suptitle(title)
    return fig


def plot_knee(runs: Sequence[EngineRun], knee_concurrency: int,
              title: str = "The concurrency knee") -> Figure:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    latency_ax, error_ax = fig.subplots(1, 2)
    for run in runs:
        points = sorted((r for r in run.knee if r.config.max_concurrency), key=lambda r: r.config.max_concurrency)
        caps = [r.config.max_concurrency for r in points]
        line, = latency_ax.plot(caps, [r.metrics.e2e.mean_s * 1e3 for r in points], marker="o",
                                label=f"{_label(run)}: mean")
        latency_ax.plot(caps, [r.metrics.e2e.p99_s * 1e3 for r in points], marker="x", linestyle="--",
                        color=line.get_color(), label=f"{_label(run)}: P99")
        error_ax.plot(caps, [failed_pct(r) for r in points], marker="o", label=_label(run))
    error_ax.set_ylim(0, 100)
    for ax, ylabel in ((latency_ax, "E2E of completed requests [ms]"), (error_ax, "failed requests [%]")):
        ax.axvline(knee_concurrency, color="gray", linestyle=":", label=f"knee ({knee_concurrency})")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 4, 128 rather than 2^7
        ax.set_xlabel("max requests in flight")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def plot_utilization(runs: Sequence[EngineRun], title: str = "Utilisation against load") -> Figure:
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    # The steady part of each point (no ramp-up, no drain): the number the headline quotes.
    summaries = {run.name: [(r.request_rate_per_s, r.steady_telemetry()) for r in run.load if r.telemetry]
                 for run in runs}
    gpu = any("gpu_util_mean_pct" in s for points in summaries.values() for _, s in points)
    key = "gpu_util_mean_pct" if gpu else "cpu_util_mean_pct"
    for run in runs:
        points = [(rate, s[key]) for rate, s in summaries[run.name] if key in s]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=_label(run))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylim(0, 105)
    ax.set_xlabel("offered request rate [req/s]")
    ax.set_ylabel("GPU utilisation, steady mean [%]" if gpu else "CPU utilisation, steady mean [%] (no GPU sampled)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig
