"""The issue's targets for the drills, measured and reported (never tuned to): one row per target and drill.

Contract: `target_rows(study)` returns `TargetRow`s (drill, target, measured, met) for what applies to
each drill that ran:
- every drill: 0 lost requests; every drill whose fault spares the gateway: 0 cut streams (the gateway owed
  an SSE error; `lab.chaos.drill_client`);
- a replica kill: >= 99 % of requests succeed and 100 % of VIP (2 replicas: those not yet streaming are
  retried on the other);
- a drill that expects an ejection (hang, partition, engine-core or replica kill): ejected within 3 probe
  intervals (the interval is in the study's config) and re-admitted after the fault ends;
- a drill that expects an alert: it fired within its `for:` window (plus the scrape and evaluation slack);
- a hostile drill (a flood): VIP's TTFT P99 while it held within VIP's queue budget (500 ms) plus the
  unloaded P99 (the drill load's VIP requests before the flood), and no replica ejected;
- a bad reload (a corrupt checkpoint offered to a replica): the old version still serves after it, and no
  request of the drill load failed (every one a success);
- every drill: a recovery time was measured.
`target_metrics(rows)` gives `<drill>_target_<name>_met` (1.0 / 0.0) and `targets_met_pct` for a record.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.tiers import tier as tier_spec

EJECT_WITHIN_INTERVALS = 3.0
KILL_SUCCESS_PCT = 99.0


@dataclass(frozen=True)
class TargetRow:
    drill: str
    target: str  # short name, also the metric's
    wanted: str
    measured: str
    met: bool


def _fmt(value: float | None, unit: str = "s") -> str:
    return "not measured" if value is None else f"{value:.2f} {unit}"


def target_rows(study) -> list[TargetRow]:
    rows: list[TargetRow] = []
    interval = study.config.probe_interval_s
    for r in study.reports:
        rows.append(TargetRow(r.drill, "nothing_lost", "0 lost", f"{r.lost} lost", r.lost == 0))
        if not r.cuts_expected:
            rows.append(TargetRow(r.drill, "nothing_cut", "0 streams cut (an SSE error instead)", f"{r.cut} cut",
                                  r.cut == 0))
        if r.drill == "kill-replica":
            vip = r.tier_success_pct.get("vip")
            rows.append(TargetRow(r.drill, "success", f">= {KILL_SUCCESS_PCT:g} % succeed", f"{r.success_pct:.1f} %",
                                  r.success_pct >= KILL_SUCCESS_PCT))
            rows.append(TargetRow(r.drill, "vip_success", "100 % of VIP", "no VIP request" if vip is None else
                                  f"{vip:.1f} %", vip == 100.0))
        if r.expect_ejection:
            bound = EJECT_WITHIN_INTERVALS * interval
            rows.append(TargetRow(r.drill, "ejected", f"ejected within 3 probe intervals ({bound:g} s at {interval:g} s)",
                                  _fmt(r.time_to_eject_s), r.time_to_eject_s is not None and r.time_to_eject_s <= bound))
            rows.append(TargetRow(r.drill, "readmitted", "re-admitted after recovery", _fmt(r.time_to_readmit_s),
                                  r.time_to_readmit_s is not None))
        if r.expected_alert is not None:
            alert = r.alert(r.expected_alert)
            fired = alert is not None and alert.firing_after_s is not None
            rows.append(TargetRow(r.drill, "alert", f"{r.expected_alert} fires within its for: "
                                  f"({'?' if alert is None else alert.for_s} s)",
                                  "did not fire" if not fired else f"firing at {alert.firing_after_s:.2f} s",
                                  fired and bool(alert.on_time)))
        if r.hostile:
            budget_ms = 1000.0 * tier_spec("vip").timeout_s
            before, during = r.vip_ttft_p99_before_ms, r.vip_ttft_p99_during_ms
            rows.append(TargetRow(
                r.drill, "vip_within_budget", f"VIP TTFT P99 <= {budget_ms:g} ms + unloaded P99",
                "not measured" if before is None or during is None else f"{during:.0f} ms (unloaded {before:.0f} ms)",
                before is not None and during is not None and during <= budget_ms + before))
            rows.append(TargetRow(r.drill, "nothing_ejected", "no replica ejected", f"{r.ejections} ejections",
                                  r.ejections == 0))
        if r.bad_reload:
            served = r.fault_output.get("old_version_serving")
            rows.append(TargetRow(r.drill, "old_version_serving", "the old version serves on",
                                  "not measured" if served is None else
                                  f"{r.fault_output.get('version_after')} (before: {r.fault_output.get('version_before')})",
                                  served is True))
            failed = r.counts.get("sent", 0) - r.counts.get("success", 0)
            rows.append(TargetRow(r.drill, "no_failed_requests", "0 failed requests", f"{failed} failed",
                                  failed == 0 and r.counts.get("sent", 0) > 0))
        rows.append(TargetRow(r.drill, "recovery_measured", "a recovery time", _fmt(r.time_to_recover_s),
                              r.time_to_recover_s is not None))
    return rows


def target_metrics(rows: list[TargetRow]) -> dict[str, float]:
    metrics = {f"{row.drill.replace('-', '_')}_target_{row.target}_met": float(row.met) for row in rows}
    metrics["targets_met_pct"] = 100.0 * sum(row.met for row in rows) / len(rows) if rows else 0.0
    return metrics
