"""Figures of notebook 04: the workload and forecasts, replicas over time, the policy comparison.

Contract: each function takes results from `lab.scale` and returns a matplotlib `Figure` (never
shows or saves it; the notebook does). Time axes are in hours from the start of the simulated
window (`plot_forecasts` also shows the last day of history). Uses the non-interactive API only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lab.studies.scaling.scenarios import ForecastScore, ScalingStudy, StudyResult
    from lab.scale.workload import Workload


def plot_forecasts(workload: Workload, study: ScalingStudy, scores: dict[str, ForecastScore]) -> Figure:
    from matplotlib.figure import Figure

    start, end = study.window_s
    step = study.forecast_step_s
    shown = workload.rate_series(step, max(0, start - 86_400 - start % step), end)
    fig = Figure(figsize=(11, 4))
    ax = fig.subplots()
    ax.plot((shown.times_s - start) / 3600, shown.values, color="black", lw=1, label="observed")
    for name, score in scores.items():
        f = score.forecast
        hours = (f.times_s - start) / 3600
        ax.plot(hours, f.mean, lw=1.2, label=f"{name} (MAPE {score.mape_pct:.1f} %, cover {score.coverage_pct:.0f} %)")
        if name == "prophet":
            ax.fill_between(hours, f.lower, f.upper, alpha=0.2, label=f"prophet {f.interval_width:.0%} interval")
    ax.axvline(0, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="hours from the simulated window's start", ylabel="requests/s",
           title="Request-rate forecasts on the held-out window")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_replicas(result: StudyResult, plan: str = "on_demand") -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5))
    ax_rate, ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 2))
    any_run = next(iter(result.runs.values()))
    seconds = np.arange(len(any_run.timeline.arrivals))
    minute = 60 * (len(seconds) // 60)
    per_minute = any_run.timeline.arrivals[:minute].reshape(-1, 60).mean(axis=1)
    ax_rate.plot(seconds[:minute:60] / 3600, per_minute, color="black", lw=1)
    ax_rate.set(ylabel="requests/s", title=f"Offered load and replicas over time ({plan})")
    for name, run in result.runs.items():
        if name.endswith("/" + plan):
            ax.step(seconds / 3600, run.timeline.alive, where="post", lw=1, label=name.split("/")[0])
    ax.set(xlabel="hours", ylabel="replicas alive (billed)")
    ax.legend(fontsize=8, ncol=3)
    return fig


def plot_comparison(result: StudyResult) -> Figure:
    from matplotlib.figure import Figure

    names = list(result.runs)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 3)
    quantities = (("SLO violations", lambda r: r.slo_violations), ("GPU-hours", lambda r: r.cost.total_gpu_hours),
                  ("cost (USD)", lambda r: r.cost.total_cost))
    colors = ["tab:blue" if n.endswith("/on_demand") else "tab:orange" for n in names]
    for ax, (title, value) in zip(axes, quantities):
        ax.barh(names, [value(result.runs[n]) for n in names], color=colors)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle("Policies x purchase plans (blue: on demand, orange: reserved + spot)", fontsize=10)
    fig.tight_layout()
    return fig
