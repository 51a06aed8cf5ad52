"""Plots and the table of a drill study: what the client saw over time, and when the service reacted.

Contract: `plot_outcomes(study)` draws one panel per drill: every request of the drill load at the time
it was sent (seconds from the fault's start) against how long it took, coloured by outcome (success,
error, timeout, connection_error, cut, lost) and shaped by tier, with the fault's window shaded (a line for
an instantaneous fault). `plot_timeline(study)` draws one row per drill with the fault, the gateway's
detection, ejection and re-admission, the replica ready again, and each alert pending and firing, on the
same axis. `drill_table(study)` is one dict of headline numbers per drill (for a notebook's display).
Both figures are matplotlib `Figure`s (Agg; nothing is shown or saved here).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLOURS = {"success": "tab:green", "error": "tab:orange", "timeout": "tab:purple", "connection_error": "tab:brown",
           "cut": "tab:pink", "lost": "tab:red"}
MARKERS = {"vip": "o", "batch": "s"}


def _shade(ax, report) -> None:
    if report.fault_duration_s:
        ax.axvspan(0.0, report.fault_duration_s, color="tab:red", alpha=0.12, label="fault")
    else:
        ax.axvline(0.0, color="tab:red", lw=1.5, label="fault")


def plot_outcomes(study) -> Figure:
    reports = study.reports
    fig, axes = plt.subplots(len(reports), 1, figsize=(10, 2.6 * len(reports)), squeeze=False)
    for ax, report in zip(axes[:, 0], reports):
        origin = report.fault_start_s
        if origin is None:
            ax.set_title(f"{report.drill}: the fault did not run ({report.verdict.status})")
            continue
        for outcome, colour in COLOURS.items():
            for tier, marker in MARKERS.items():
                rows = [r for r in report.rows if r.outcome == outcome and r.tier == tier]
                if rows:
                    ax.scatter([r.sent_at_s - origin for r in rows], [r.ended_at_s - r.sent_at_s for r in rows],
                               s=14, c=colour, marker=marker, label=f"{tier} {outcome}", alpha=0.8)
        _shade(ax, report)
        ax.set_yscale("log")
        ax.set_ylabel("request time (s)")
        lost = report.lost
        ax.set_title(f"{report.drill} ({report.backend}): {report.counts.get('sent', 0)} sent, "
                     f"{report.success_pct:.1f}% ok, VIP {report.tier_success_pct.get('vip', math.nan):.1f}% ok, "
                     f"{lost} lost", fontsize=10)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the fault's start (request sent at)")
    fig.tight_layout()
    return fig


def _marks(report) -> list[tuple[str, float, str]]:
    found = [("detected", report.time_to_detect_s, "tab:orange"), ("ejected", report.time_to_eject_s, "tab:red"),
             ("ready again", report.time_to_ready_s, "tab:blue")]
    if report.time_to_readmit_s is not None:
        base = report.fault_duration_s or 0.0  # re-admission counts from the fault's end
        found.append(("re-admitted", base + report.time_to_readmit_s, "tab:green"))
    for alert in report.alerts:
        found.append((f"{alert.name} pending", alert.pending_after_s, "tab:gray"))
        found.append((f"{alert.name} firing", alert.firing_after_s, "black"))
    return [(label, t, colour) for label, t, colour in found if t is not None]


def plot_timeline(study) -> Figure:
    reports = study.reports
    fig, ax = plt.subplots(figsize=(10, 1.3 * len(reports) + 1.6))
    span = max([t for r in reports for _, t, _ in _marks(r)] + [r.fault_duration_s or 0.0 for r in reports] + [1.0])
    for row, report in enumerate(reports):
        ax.barh(row, report.fault_duration_s or 0.15, left=0.0, color="tab:red", alpha=0.25, height=0.5)
        last_t, lane = -math.inf, 0
        for label, t, colour in sorted(_marks(report), key=lambda mark: mark[1]):
            alert = label.endswith(("pending", "firing"))
            ax.plot(t, row, marker="|" if alert else "D", color=colour, ms=12)
            lane = lane + 1 if t - last_t < 0.12 * span else 0  # labels of marks close in time get their own lanes
            last_t = t
            ax.annotate(label, (t, row), textcoords="offset points", fontsize=7,
                        xytext=(3, (10 + 10 * (lane // 2)) * (1 if lane % 2 == 0 else -1.6)))
    ax.set_yticks(range(len(reports)), [r.drill for r in reports])
    ax.set_ylim(len(reports) - 0.4, -0.6)
    ax.set_xlabel(f"seconds from the fault's start (gateway probes every {study.config.probe_interval_s:g} s; "
                  "red: the fault)")
    ax.set_title("detection, ejection, recovery and alerts per drill")
    fig.tight_layout()
    return fig


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def drill_table(study) -> list[dict]:
    return [{"drill": r.drill, "backend": r.backend, "passed": r.passed, "sent": r.counts.get("sent", 0),
             "lost": r.lost, "success_pct": _round(r.success_pct, 1),
             "vip_success_pct": _round(r.tier_success_pct.get("vip"), 1), "vip_ttft_p99_ms": _round(r.vip_ttft_p99_ms, 0),
             "detect_s": _round(r.time_to_detect_s), "eject_s": _round(r.time_to_eject_s),
             "eject_probe_intervals": _round(r.ejected_within_probe_intervals),
             "ready_s": _round(r.time_to_ready_s), "readmit_s": _round(r.time_to_readmit_s),
             "recover_s": _round(r.time_to_recover_s),
             "vip_ttft_p99_before_during_ms": [_round(r.vip_ttft_p99_before_ms, 0), _round(r.vip_ttft_p99_during_ms, 0)],
             "ejections": r.ejections,
             "alerts": {a.name: {"pending_s": _round(a.pending_after_s), "firing_s": _round(a.firing_after_s),
                                 "on_time": a.on_time} for a in r.alerts},
             "failed_activities": list(r.verdict.failed_activities), "status": r.verdict.status}
            for r in study.reports]
