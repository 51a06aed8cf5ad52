"""What a hot-reload run measured: record-ready metrics, a row per reload, and the issue's targets.

Contract:
- `run_metrics(run)`: one run's metrics, unprefixed: `reload_pause_ms_p50` / `_max` (the replica's
  `pause_ms` of every switched and promoted reload: the step loop's stall at the switch),
  `reload_duration_s_max` (start to switch), `requests`, `failed_requests` (every request of the load that did
  not succeed, whatever the reason), `itl_p99_steady_ms` / `itl_p99_around_reload_ms` (and `ttft_...`: the
  split of `windows.split` over the run's reload windows), `itl_max_around_reload_ms` (the longest gap a
  client saw near a reload: a client-side bound on the stall), `itl_p99_around_switch_ms` / `_drain_ms` /
  `_corrupt_ms` (the windows of one policy only), the sample sizes (`itl_gaps_steady`, ...),
  `reloads_switched` (switches that switched), `drain_promoted`, `reloads_refused` (refused with
  `reload_refused`), `refused_named_defect` (the refusal named what was wrong), `refusal_kept_serving`
  (a completion right after it succeeded and `/v1/models`' version did not change), `replica_ready_s`.
- `study_metrics(runs)`: every run's metrics prefixed by its model (`tiny_reload_pause_ms_max`), plus totals
  over the models: `failed_requests`, `reloads_switched`, `reloads_refused`, `drain_promoted`,
  `reload_pause_ms_max`, and the same maximum as `hot_reload_pause_ms`, the name the report's claim
  `reload.impact` reads (`lab.report.claims`).
- `reload_rows(run)`: one dict per reload for a table (offset, outcome, version, timings, window P99s).
- `target_rows(run)`: the issue's targets, measured and never tuned to (`TARGETS`): pause <= 10 ms, 0 failed
  requests, ITL P99 around reloads within 20 % of steady (all windows, and switches and drains apart), the
  corrupt source refused by name with serving
  kept, the drain promoted. `target_metrics(rows)`: `<model>_target_<name>_met` (1/0) and `targets_met_pct`.
- `write_reload_log(runs, path)`: the evidence as JSON, per model: the config, each reload's step, client times
  and the replica's own records (or its error), the refusal check, `GET /admin/reload`'s records and the
  replica's `lab:weight_*` metrics at the end.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab.studies.hot_reload.study import HotReloadRun, ReloadOutcome
from lab.studies.hot_reload.windows import itl_intervals, max_ms, p99_ms, split, ttft_intervals
from lab.track.flatten import metric_prefix

MAX_PAUSE_MS = 10.0  # the target for the step loop's stall at a switch
MAX_ITL_P99_INCREASE = 0.20  # ITL P99 around reloads at most 20 % above steady state
TARGETS = {"pause": f"reload pause <= {MAX_PAUSE_MS:g} ms (max over switches)",
           "no_failed_requests": "0 failed requests during the reloads",
           "itl_p99": f"ITL P99 around reloads <= steady x {1 + MAX_ITL_P99_INCREASE:g}",
           "itl_p99_switch": f"ITL P99 around switches <= steady x {1 + MAX_ITL_P99_INCREASE:g}",
           "itl_p99_drain": f"ITL P99 around drains <= steady x {1 + MAX_ITL_P99_INCREASE:g}",
           "refused": "corrupt source refused by name, old weights keep serving",
           "drain_promoted": "a drain ends promoted"}


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


def _pauses(run: HotReloadRun) -> list[float]:
    return [r.pause_ms for r in run.reloads if r.pause_ms is not None]


def _copy_rates(run: HotReloadRun) -> tuple[float, float]:
    """(weight bytes, HBM bytes per second the switch's copy moved: read + write) of the median switch. The copy
    into the live tensors is the floor of a switch's pause: 2 x bytes / the card's bandwidth."""
    copies = sorted((float(r.call.record["switch_copy_ms"]), float(r.call.record["bytes"])) for r in run.reloads
                    if r.step.kind == "switch" and "switch_copy_ms" in r.call.record and "bytes" in r.call.record)
    if not copies:
        return math.nan, math.nan
    copy_ms, nbytes = copies[len(copies) // 2]
    return nbytes, 2.0 * nbytes / (copy_ms / 1e3) if copy_ms > 0 else math.nan


def run_metrics(run: HotReloadRun) -> dict[str, float]:
    started_at, windows = run.load.started_at, run.windows()
    itl = split(itl_intervals(run.load.results, started_at), windows)
    ttft = split(ttft_intervals(run.load.results, started_at), windows)
    pauses = _pauses(run)
    durations = [r.switched_at - r.started_at for r in run.reloads if r.switched_at is not None]
    corrupt = [r for r in run.reloads if r.step.kind == "corrupt"]
    refused = [r for r in corrupt if r.call.outcome == "refused"]
    named = bool(refused) and all(run.corrupt.expect_in_error in (r.call.error_message or "") for r in refused)
    weight_bytes, copy_rate = _copy_rates(run)
    return {
        "reload_pause_ms_p50": _percentile(pauses, 50), "reload_pause_ms_max": max(pauses, default=math.nan),
        "reload_weight_bytes": weight_bytes, "reload_copy_bytes_per_s": copy_rate,
        "reload_duration_s_max": max(durations, default=math.nan),
        "requests": float(len(run.load.results)),
        "failed_requests": float(sum(not r.success for r in run.load.results)),
        "itl_p99_steady_ms": p99_ms(itl.steady), "itl_p99_around_reload_ms": p99_ms(itl.around),
        "itl_max_around_reload_ms": max_ms(itl.around),
        "itl_gaps_steady": float(len(itl.steady)), "itl_gaps_around_reload": float(len(itl.around)),
        "ttft_p99_steady_ms": p99_ms(ttft.steady), "ttft_p99_around_reload_ms": p99_ms(ttft.around),
        "ttft_requests_steady": float(len(ttft.steady)), "ttft_requests_around_reload": float(len(ttft.around)),
        # by policy: a switch stalls the loop once; a drain runs its new requests eagerly on the standby meanwhile
        **{f"itl_p99_around_{kind}_ms": p99_ms(split(itl_intervals(run.load.results, started_at),
                                                     _windows_of(run, kind)).around) for kind in KINDS},
        "reloads_switched": float(sum(r.step.kind == "switch" and r.call.outcome == "switched" for r in run.reloads)),
        "drain_promoted": float(sum(r.promoted is not None for r in run.reloads)),
        "reloads_refused": float(len(refused)),
        "refused_named_defect": float(named),
        "refusal_kept_serving": float(run.refusal is not None and run.refusal.kept_serving),
        "replica_ready_s": run.ready_after_s,
    }


KINDS = ("switch", "drain", "corrupt")
PLURALS = {"switch": "switches", "drain": "drains"}


def _windows_of(run: HotReloadRun, kind: str) -> list:
    return [r.window(run.config.window_s) for r in run.reloads if r.step.kind == kind]


def study_metrics(runs: Sequence[HotReloadRun]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    per_run = [run_metrics(run) for run in runs]
    for run, values in zip(runs, per_run):
        metrics.update({f"{metric_prefix(run.config.model)}_{k}": v for k, v in values.items()})
    for name in ("failed_requests", "reloads_switched", "reloads_refused", "drain_promoted"):
        metrics[name] = float(sum(values[name] for values in per_run))
    pauses = [p for run in runs for p in _pauses(run)]
    metrics["reload_pause_ms_max"] = metrics["hot_reload_pause_ms"] = max(pauses, default=math.nan)
    return metrics


def _window_p99s(run: HotReloadRun, reload: ReloadOutcome) -> tuple[float, float]:
    window = [reload.window(run.config.window_s)]
    itl = split(itl_intervals(run.load.results, run.load.started_at), window)
    ttft = split(ttft_intervals(run.load.results, run.load.started_at), window)
    return p99_ms(itl.around), p99_ms(ttft.around)


def reload_rows(run: HotReloadRun) -> list[dict[str, Any]]:
    rows = []
    for reload in run.reloads:
        record, call = reload.call.record, reload.call
        itl_p99, ttft_p99 = _window_p99s(run, reload)
        rows.append({
            "step": reload.step.label, "offset_s": round(call.sent_at - run.load.started_at, 2),
            "outcome": call.outcome + (" -> promoted" if reload.promoted else ""),
            "version": record.get("version"), "generation": record.get("generation"),
            "pause_ms": None if reload.pause_ms is None else round(reload.pause_ms, 2),
            "rebind": record.get("rebind"),  # pointer (a swap to the standby's own graphs) or copy
            "read_s": None if "read_s" not in record else round(record["read_s"], 3),
            "start_to_switch_s": (None if reload.switched_at is None
                                  else round(reload.switched_at - reload.started_at, 3)),
            "client_s": round(call.client_s, 3),
            "itl_p99_window_ms": _rounded(itl_p99), "ttft_p99_window_ms": _rounded(ttft_p99),
            "error": call.error_message,
        })
    return rows


def _rounded(value_ms: float) -> float | None:
    return None if math.isnan(value_ms) else round(value_ms, 1)  # a window without tokens has no P99


@dataclass(frozen=True)
class TargetRow:
    model: str
    target: str  # a key of TARGETS
    wanted: str
    measured: str
    met: bool


def target_rows(run: HotReloadRun) -> list[TargetRow]:
    m, model = run_metrics(run), run.config.model
    steady, around = m["itl_p99_steady_ms"], m["itl_p99_around_reload_ms"]
    rows = [
        ("pause", f"max {m['reload_pause_ms_max']:.2f} ms, p50 {m['reload_pause_ms_p50']:.2f} ms"
                  + (f" (copying {m['reload_weight_bytes'] / 1e9:.2f} GB in at {m['reload_copy_bytes_per_s'] / 1e12:.2f} "
                     "TB/s read + write)" if math.isfinite(m["reload_copy_bytes_per_s"]) else ""),
         m["reload_pause_ms_max"] <= MAX_PAUSE_MS),
        ("no_failed_requests", f"{m['failed_requests']:.0f} of {m['requests']:.0f} failed", m["failed_requests"] == 0),
        ("itl_p99", f"around {around:.1f} ms vs steady {steady:.1f} ms ({_change_pct(around, steady)})",
         around <= steady * (1 + MAX_ITL_P99_INCREASE)),
    ]
    for kind in ("switch", "drain"):  # the same bar per policy: which one costs what
        value = m[f"itl_p99_around_{kind}_ms"]
        if math.isfinite(value):
            rows.append((f"itl_p99_{kind}", f"around {PLURALS[kind]} {value:.1f} ms vs steady {steady:.1f} ms "
                         f"({_change_pct(value, steady)})", value <= steady * (1 + MAX_ITL_P99_INCREASE)))
    if any(r.step.kind == "corrupt" for r in run.reloads):
        refusal = run.refusal
        versions = f"version {refusal.version_before[0]} -> {refusal.version_after[0]}" if refusal else "not checked"
        rows.append(("refused", f"{m['reloads_refused']:.0f} refused, named: {bool(m['refused_named_defect'])}, "
                     f"completion after: {'ok' if refusal and refusal.completion.ok else 'FAILED'}, {versions}",
                     m["reloads_refused"] >= 1 and bool(m["refused_named_defect"]) and bool(m["refusal_kept_serving"])))
    drains = sum(r.step.kind == "drain" for r in run.reloads)
    if drains:
        rows.append(("drain_promoted", f"{m['drain_promoted']:.0f} of {drains} promoted",
                     m["drain_promoted"] == drains))
    return [TargetRow(model, name, TARGETS[name], measured, bool(met)) for name, measured, met in rows]


def _change_pct(value: float, reference: float) -> str:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return "n/a"
    return f"{100.0 * (value / reference - 1):+.0f} %"


def target_metrics(rows: Sequence[TargetRow]) -> dict[str, float]:
    metrics = {f"{metric_prefix(r.model)}_target_{r.target}_met": float(r.met) for r in rows}
    metrics["targets_met_pct"] = 100.0 * sum(r.met for r in rows) / len(rows) if rows else math.nan
    return metrics


def write_reload_log(runs: Sequence[HotReloadRun], path: Path) -> Path:
    log = {run.config.model: {
        "config": run.config.describe(), "load_started_at": run.load.started_at,
        "corrupt_source": None if run.corrupt is None else {**asdict(run.corrupt), "path": str(run.corrupt.path)},
        "initial_version": run.initial_version, "final_version": run.final_version,
        "reloads": [{"step": asdict(r.step), "source": r.source, "late_s": r.late_s, "call": asdict(r.call),
                     "promoted": r.promoted} for r in run.reloads],
        "refusal_check": None if run.refusal is None else asdict(run.refusal),
        "admin_reload_recent": list(run.recent), "weight_metrics": list(run.weight_metrics),
    } for run in runs}
    path = Path(path)
    path.write_text(json.dumps(log, indent=1) + "\n")
    return path
