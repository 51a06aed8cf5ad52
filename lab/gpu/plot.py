"""Plot a telemetry trace.

Contract: `plot_trace(trace)` returns a new matplotlib `Figure` (not pyplot's global current
figure, so re-running a notebook cell never draws onto an old plot): CPU utilisation over time,
plus GPU utilisation per card when GPUs were sampled.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from lab.gpu.telemetry import TelemetryTrace


def plot_trace(trace: TelemetryTrace, title: str = "Utilisation during the load") -> Figure:
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.add_subplot()
    times = [s.t_s for s in trace.samples]
    ax.plot(times, [s.cpu_util_pct for s in trace.samples], marker=".", label="CPU (all cores)")
    gpu_indices = sorted({g.index for s in trace.samples for g in s.gpus})
    for index in gpu_indices:
        util = [next((g.util_pct for g in s.gpus if g.index == index), None) for s in trace.samples]
        ax.plot(times, [float("nan") if u is None else u for u in util], marker=".", label=f"GPU {index}")
    ax.set_xlabel("time since start [s]")
    ax.set_ylabel("utilisation [%]")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return fig
