"""One drill's numbers: the client's ledger, the gateway's view, the supervisor's events and the alerts, lined up.

Contract: `drill_report(inputs)` is a pure function of `DrillInputs` (journal, client ledger, `WatchLog`,
state.json events, clocks) and returns a `DrillReport`. Every time is seconds from the fault's start
(re-admit and recover: from its end) on the `time.monotonic()` clock (state.json's wall-clock events are moved
onto it with `wall_minus_monotonic_s`); None when it did not happen (or does not apply). For the target replica:
- time to detect: the first sign the gateway saw trouble: a watch sample with a failed probe, failed
  requests in a row, or the replica out of service, or its `ejected` event, whichever is first;
- time to eject: the gateway's `ejected` event (else the first sample out of service);
- time to ready: the supervisor's next `ready` of the target (a restarted process serving again);
- time to re-admit: the gateway's `readmitted` event after the ejection (else the first healthy sample),
  counted like recovery from the fault's end: negative when the gateway re-admitted the replica while a
  partial fault still held (a reset or loss that let some probes through);
- time to recover: from the fault's end (its start for an instantaneous fault) to the last of ready and
  re-admitted that apply, 0 when both came before the fault's end (it had recovered under the fault); for a fault with neither (latency, loss, load) the client's own time to recover
  (`DrillResult.client_view`: the last bad request sent after the end).
The gateway as target: detect = the supervisor's `exited`, ready = its next `ready`. Alerts: each alert
that became active at or after the fault's start (`activeAt`), when it was first seen pending and
firing; `on_time` compares firing with its `for:` window plus `alert_slack_s` (scrape, evaluation and
poll intervals), counted from the condition's start (the ejection for the drill's expected alert, else
when Prometheus saw it start: its `activeAt`). `passed`: nothing lost, no stream cut unless the fault killed
the gateway, the experiment completed, its hypothesis held before and after, and no activity of its method
failed (e.g. "the gateway ejects it" within its timeout). `metrics()` flattens it for a record (`<drill>_<name>`; Nones left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lab.bench.metrics import LatencyStats
from lab.chaos.drill_client import DrillRequest
from lab.chaos.drill_report import DrillResult
from lab.chaos.watch import WatchLog
from lab.service.state import Event
from lab.studies.chaos.catalog import Drill
from lab.studies.chaos.journal import Verdict, activity_outputs, fault_window, verdict

ALERT_MARGIN_S = 1.0  # an alert active this long before the fault belongs to an earlier drill


@dataclass(frozen=True)
class DrillInputs:
    drill: Drill
    journal: dict
    ledger: DrillResult | None
    watch: WatchLog
    events: tuple[Event, ...]  # state.json events, unix seconds
    wall_minus_monotonic_s: float  # time.time() - time.monotonic() when they were read
    target: str  # the replica, or "gateway"
    probe_interval_s: float
    alert_windows_s: dict[str, float]  # alert name -> its `for:` in seconds (the rules Prometheus loaded)
    alert_slack_s: float


@dataclass(frozen=True)
class AlertTiming:
    name: str
    pending_after_s: float | None  # Prometheus' activeAt, from the fault's start
    firing_after_s: float | None  # first poll that saw it firing
    for_s: float | None
    on_time: bool | None  # fired within for + slack of its condition's start


@dataclass(frozen=True)
class DrillReport:
    drill: str
    title: str
    backend: str  # what acted: signal, proxy, netns, load
    verdict: Verdict
    fault_start_s: float | None  # monotonic
    fault_duration_s: float | None
    counts: dict[str, int]  # sent, success, error, timeout, connection_error, cut, lost
    success_pct: float
    tier_success_pct: dict[str, float]
    vip_ttft_p99_ms: float | None
    time_to_detect_s: float | None
    time_to_eject_s: float | None
    time_to_ready_s: float | None
    time_to_readmit_s: float | None
    time_to_recover_s: float | None
    client_time_to_recover_s: float | None
    probe_interval_s: float
    alerts: tuple[AlertTiming, ...] = ()
    expected_alert: str | None = None
    expect_ejection: bool = False  # the drill's file says the gateway should eject the target
    error_types: dict[str, int] = field(default_factory=dict)
    rows: tuple[DrillRequest, ...] = ()
    hostile: bool = False  # the drill's file says: a flood to shrug off
    vip_ttft_p99_before_ms: float | None = None  # the drill load's VIP requests sent before the fault
    vip_ttft_p99_during_ms: float | None = None  # ... and sent while it held
    ejections: int = 0  # the gateway's `ejected` events, any replica, from the fault's start on
    bad_reload: bool = False  # the drill's file says: a corrupt hot reload, to be refused
    fault_output: dict = field(default_factory=dict)  # what the fault action returned (a reload's versions)
    cuts_expected: bool = False  # the fault kills the gateway: the streams it carried can only be cut

    @property
    def lost(self) -> int:
        return self.counts.get("lost", 0)

    @property
    def cut(self) -> int:
        return self.counts.get("cut", 0)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and (self.cut == 0 or self.cuts_expected) and self.verdict.completed \
            and bool(self.verdict.steady_before) and bool(self.verdict.steady_after) and not self.verdict.failed_activities

    @property
    def ejected_within_probe_intervals(self) -> float | None:
        return None if self.time_to_eject_s is None else self.time_to_eject_s / self.probe_interval_s

    def alert(self, name: str | None) -> AlertTiming | None:
        return next((a for a in self.alerts if a.name == name), None)

    def metrics(self) -> dict[str, float]:
        p = self.drill.replace("-", "_")
        values: dict[str, float | None] = {
            "passed": float(self.passed), "completed": float(self.verdict.completed),
            "sent": self.counts.get("sent", 0), "succeeded": self.counts.get("success", 0), "lost": self.lost,
            "errors": self.counts.get("error", 0), "timeouts": self.counts.get("timeout", 0),
            "connection_errors": self.counts.get("connection_error", 0), "cut_streams": self.cut,
            "success_pct": self.success_pct,
            **{f"{tier}_success_pct": pct for tier, pct in self.tier_success_pct.items()},
            "vip_ttft_p99_ms": self.vip_ttft_p99_ms, "time_to_detect_s": self.time_to_detect_s,
            "time_to_eject_s": self.time_to_eject_s, "time_to_ready_s": self.time_to_ready_s,
            "time_to_readmit_s": self.time_to_readmit_s, "time_to_recover_s": self.time_to_recover_s,
            "client_time_to_recover_s": self.client_time_to_recover_s,
            "eject_probe_intervals": self.ejected_within_probe_intervals, "fault_duration_s": self.fault_duration_s,
            "vip_ttft_p99_before_ms": self.vip_ttft_p99_before_ms,
            "vip_ttft_p99_during_ms": self.vip_ttft_p99_during_ms, "ejections": self.ejections}
        expected = self.alert(self.expected_alert)
        if self.expected_alert is not None:
            values["expected_alert_fired"] = float(expected is not None and expected.firing_after_s is not None)
            values["expected_alert_firing_after_s"] = expected.firing_after_s if expected else None
        return {f"{p}_{k}": float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}


def _first(times: list[float], after: float | None) -> float | None:
    found = [t for t in times if after is not None and t >= after]
    return min(found) if found else None


def _alerts(inputs: DrillInputs, start: float, condition_s: float | None) -> tuple[AlertTiming, ...]:
    found: dict[str, dict] = {}
    for a in inputs.watch.alert_samples:
        became = a.active_at_s if a.active_at_s is not None else a.at_s
        if became < start - ALERT_MARGIN_S:
            continue  # active before this fault: an earlier drill's
        seen = found.setdefault(a.name, {"pending": became, "firing": None})
        if a.state == "firing" and seen["firing"] is None:
            seen["firing"] = a.at_s
    timings = []
    for name, seen in sorted(found.items()):
        window = inputs.alert_windows_s.get(name)
        # The expected alert's condition is the ejection we measured; another's, what Prometheus saw (activeAt).
        origin = condition_s if name == inputs.drill.expect_alert and condition_s is not None else seen["pending"]
        on_time = None if seen["firing"] is None or window is None else \
            seen["firing"] - origin <= window + inputs.alert_slack_s
        timings.append(AlertTiming(name, seen["pending"] - start,
                                   None if seen["firing"] is None else seen["firing"] - start, window, on_time))
    return tuple(timings)


def _vip_ttft_p99_ms(rows: list[DrillRequest]) -> float | None:
    ttfts = [r.ttft_s for r in rows if r.tier == "vip" and r.outcome == "success" and r.ttft_s is not None]
    p99 = LatencyStats.of(ttfts).p99_s
    return None if math.isnan(p99) else p99 * 1000.0


def drill_report(inputs: DrillInputs) -> DrillReport:
    drill, watch = inputs.drill, inputs.watch
    start, end = fault_window(inputs.journal, drill)
    reference = end if end is not None else start  # recovery counts from here
    mine = [e for e in inputs.events if e.process == inputs.target]
    event_times = {kind: [e.time - inputs.wall_minus_monotonic_s for e in mine if e.event == kind]
                   for kind in ("exited", "ready")}
    detect = eject = readmit = None
    if drill.target == "replica":
        samples = [s for s in watch.replica_samples if s.replica == inputs.target]
        events = [e for e in watch.gateway_events if e.replica == inputs.target]
        eject = _first([e.at_s for e in events if e.kind == "ejected"], start) \
            or _first([s.at_s for s in samples if not s.healthy], start)
        troubled = [s.at_s for s in samples
                    if not s.healthy or s.consecutive_failures or s.consecutive_upstream_failures]
        detect = min((t for t in (_first(troubled, start), eject) if t is not None), default=None)
        readmit = _first([e.at_s for e in events if e.kind == "readmitted"], eject) \
            or _first([s.at_s for s in samples if s.healthy], eject)
    elif drill.target == "gateway":
        detect = _first(event_times["exited"], start)
    ready = _first(event_times["ready"], start) if drill.expect_restart else None
    applicable = [t for t in (ready, readmit if eject is not None else None) if t is not None]
    ledger = inputs.ledger
    view = ledger.client_view(start, reference) if ledger is not None and start is not None else None
    recover = max(max(applicable) - reference, 0.0) if applicable and reference is not None else None
    if recover is None and not drill.expect_restart and not drill.expect_ejection and view is not None:
        recover = view.time_to_recover_s
    counts = {"sent": len(ledger.rows), **ledger.counts()} if ledger is not None else {"sent": 0}
    tiers = ledger.tiers if ledger is not None else ()
    outputs = activity_outputs(inputs.journal, drill.fault_start)
    backend = str(outputs[0].get("backend", "?")) if outputs and isinstance(outputs[0], dict) else "?"

    def since(t: float | None) -> float | None:
        return None if t is None or start is None else t - start

    rows = list(ledger.rows) if ledger is not None else []
    before = during = None
    if start is not None:
        before = _vip_ttft_p99_ms([r for r in rows if r.sent_at_s < start])
        during = _vip_ttft_p99_ms([r for r in rows if start <= r.sent_at_s < (end if end is not None else start)])
    ejections = sum(1 for e in watch.gateway_events if e.kind == "ejected" and start is not None and e.at_s >= start)

    return DrillReport(
        drill.name, drill.title, backend, verdict(inputs.journal), start,
        None if start is None or end is None else end - start, counts,
        100.0 * ledger.success_rate() if ledger is not None and ledger.rows else math.nan,
        {t: 100.0 * ledger.success_rate(t) for t in tiers if ledger.of(t)} if ledger is not None else {},
        None if ledger is None or math.isnan(p99 := ledger.ttft_p99_s("vip")) else p99 * 1000.0,
        since(detect), since(eject), since(ready), None if readmit is None or reference is None else readmit - reference,
        recover, view.time_to_recover_s if view is not None else None, inputs.probe_interval_s,
        _alerts(inputs, start, eject) if start is not None else (), drill.expect_alert, drill.expect_ejection,
        ledger.error_types() if ledger is not None else {}, ledger.rows if ledger is not None else (),
        drill.hostile, before, during, ejections, drill.bad_reload,
        outputs[0] if outputs and isinstance(outputs[0], dict) else {}, drill.target == "gateway")
