"""Plots of the hot-reload study: the load's requests against the reloads, and inter-token latency around them.

Contract: each function takes the runs (one per model) and returns a new matplotlib `Figure` (never pyplot's
global one), one row of axes per run, time in seconds from the load's start (`BenchResult.started_at`).
- `plot_timeline(runs)`: every request as a line from its send to its end (waiting for the first token pale,
  streaming dark; a failed request a red cross at its send), each reload's span from its start to its switch
  shaded (refused ones red) with a line at the switch labelled with the step and its pause.
- `plot_itl(runs)`: every inter-token gap at the time it ended (ms, log scale), steady-state gaps
  grey and gaps around a reload orange, the steady P99 and the target (steady P99 x 1.2) as lines, the
  switches marked.
"""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from lab.studies.hot_reload.study import HotReloadRun
from lab.studies.hot_reload.summary import MAX_ITL_P99_INCREASE
from lab.studies.hot_reload.windows import itl_intervals, p99_ms, split

OUTCOME_COLOURS = {"switched": "C2", "draining": "C0", "refused": "C3", "error": "C3"}


def _figure(rows: int, height: float) -> tuple[Figure, list]:
    fig = Figure(figsize=(13, height * rows), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    return fig, list(axes)


def _mark_reloads(ax, run: HotReloadRun, with_labels: bool) -> None:
    t0 = run.load.started_at
    for reload in run.reloads:
        colour = OUTCOME_COLOURS.get(reload.call.outcome, "C7")
        end = reload.switched_at if reload.switched_at is not None else reload.call.answered_at
        ax.axvspan(reload.started_at - t0, end - t0, color=colour, alpha=0.15, lw=0)
        ax.axvline(end - t0, color=colour, lw=1.2)
        if with_labels:
            pause = f"\n{reload.pause_ms:.1f} ms" if reload.pause_ms is not None else f"\n{reload.call.outcome}"
            ax.annotate(reload.step.label + pause, (end - t0, 1.0), xycoords=("data", "axes fraction"),
                        fontsize="x-small", ha="left", va="top", color=colour, xytext=(3, -3),
                        textcoords="offset points")


def plot_timeline(runs: Sequence[HotReloadRun]) -> Figure:
    fig, axes = _figure(len(runs), 4.0)
    for ax, run in zip(axes, runs):
        rows = sorted(run.load.results, key=lambda r: r.sent_s)
        done = [(i, r) for i, r in enumerate(rows) if r.success]
        ax.hlines([i for i, _ in done], [r.sent_s for _, r in done], [r.sent_s + r.ttft_s for _, r in done],
                  color="C1", alpha=0.4, lw=1.5, label="waiting for the first token")
        ax.hlines([i for i, _ in done], [r.sent_s + r.ttft_s for _, r in done], [r.sent_s + r.e2e_s for _, r in done],
                  color="C0", lw=1.5, label="streaming")
        failed = [(i, r) for i, r in enumerate(rows) if not r.success]
        if failed:
            ax.scatter([r.sent_s for _, r in failed], [i for i, _ in failed], marker="x", color="C3", zorder=3,
                       label=f"failed ({len(failed)})")
        _mark_reloads(ax, run, with_labels=True)
        ax.set_ylabel("request (by send time)")
        ax.set_title(f"{run.config.model}: {len(rows)} requests at {run.config.request_rate_per_s:g} req/s, "
                     f"{len(run.reloads)} reloads", fontsize="medium")
        ax.legend(fontsize="x-small", loc="lower right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds from the load's start")
    return fig


def plot_itl(runs: Sequence[HotReloadRun]) -> Figure:
    fig, axes = _figure(len(runs), 3.6)
    for ax, run in zip(axes, runs):
        t0, windows = run.load.started_at, run.windows()
        gaps = itl_intervals(run.load.results, t0)
        around = [g for g in gaps if any(w.overlaps(g.begin, g.end) for w in windows)]
        steady = [g for g in gaps if not any(w.overlaps(g.begin, g.end) for w in windows)]
        for group, colour, name in ((steady, "0.55", "steady"), (around, "C1", "around a reload")):
            ax.scatter([g.end - t0 for g in group], [g.value_s * 1e3 for g in group], s=4, color=colour,
                       label=f"{name} ({len(group)} gaps)")
        _mark_reloads(ax, run, with_labels=False)
        if steady:
            steady_p99 = p99_ms(split(gaps, windows).steady)
            ax.axhline(steady_p99, color="0.3", ls="--", lw=1, label=f"steady P99 {steady_p99:.1f} ms")
            ax.axhline(steady_p99 * (1 + MAX_ITL_P99_INCREASE), color="C3", ls=":", lw=1,
                       label=f"target: steady P99 x {1 + MAX_ITL_P99_INCREASE:g}")
        if gaps:  # a log axis needs positive values; with none (every request failed) the empty panel says so
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no inter-token gaps: no request streamed two tokens", transform=ax.transAxes,
                    ha="center", va="center", color="C3")
        ax.set_ylabel("inter-token latency [ms]")
        ax.set_title(f"{run.config.model}: ITL around reloads (a reload's window: its start - "
                     f"{run.config.window_s:g} s to its switch + {run.config.window_s:g} s)",
                     fontsize="medium")
        ax.legend(fontsize="x-small", loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds from the load's start")
    return fig
