"""Plots of the priority-scheduling study: per-tier latency and refusals, FCFS beside the tiers.

Contract: `plot_tier_comparison(metrics, setups, tiers, timeouts_ms)` reads the flat metrics of
`lab.studies.priority.study.tier_outcomes` (`<setup>_<tier>_<metric>`) and returns a new matplotlib
`Figure` (never pyplot's global one) with three panels: P50/P99 TTFT, P50/P99 E2E (ms, log scale,
each tier's queue timeout as a marker), and the share of requests shed (429/504) or timed out at
the client. Bars are grouped by tier, one colour per setup; a tier with no completed request has
no latency bar (NaN), never a zero one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def _values(metrics: Mapping[str, float], setup: str, tiers: Sequence[str], name: str) -> np.ndarray:
    return np.array([metrics.get(f"{setup}_{tier}_{name}", math.nan) for tier in tiers], dtype=np.float64)


def plot_tier_comparison(metrics: Mapping[str, float], setups: Sequence[str], tiers: Sequence[str],
                         timeouts_ms: Mapping[str, float] | None = None,
                         title: str = "Per-tier latency under overload") -> Figure:
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    x = np.arange(len(tiers))
    width = 0.8 / (2 * len(setups))
    for ax, kind in zip(axes[:2], ("ttft", "e2e")):
        for i, setup in enumerate(setups):
            for j, stat in enumerate(("p50", "p99")):
                offset = (2 * i + j - len(setups) + 0.5) * width
                ax.bar(x + offset, _values(metrics, setup, tiers, f"{kind}_{stat}_ms"), width,
                       label=f"{setup} {stat.upper()}", color=f"C{i}", alpha=0.55 if stat == "p50" else 1.0)
        if timeouts_ms:
            ax.scatter(x, [timeouts_ms.get(t, math.nan) for t in tiers], marker="_", s=900, color="red",
                       label="tier queue timeout", zorder=3)
        ax.set_yscale("log")
        ax.set_xticks(x, tiers)
        ax.set_ylabel(f"{kind.upper()} [ms]")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    ax = axes[2]
    width = 0.8 / len(setups)
    for i, setup in enumerate(setups):
        shed = np.nan_to_num(_values(metrics, setup, tiers, "shed_pct"))
        timed_out = np.nan_to_num(_values(metrics, setup, tiers, "timeout_pct"))
        offset = (i - (len(setups) - 1) / 2) * width
        ax.bar(x + offset, shed, width, color=f"C{i}", label=f"{setup} shed (429/504)")
        ax.bar(x + offset, timed_out, width, bottom=shed, color=f"C{i}", hatch="//", alpha=0.5,
               label=f"{setup} client timeout")
    ax.set_xticks(x, tiers)
    ax.set_ylabel("requests not served [%]")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig
