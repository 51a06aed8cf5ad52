"""A drill's numbers from a hand-made journal, client ledger, gateway watch and state.json events.

Every expected value below is computed by hand from the rows written here (times on one monotonic clock;
state.json's events are the same instants in wall-clock seconds, 1000 s ahead).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.chaos.drill_client import DrillRequest
from lab.chaos.drill_report import DrillResult
from lab.chaos.records import Instant
from lab.chaos.watch import AlertSample, GatewayEvent, ReplicaSample, WatchLog
from lab.service.state import Event
from lab.studies.chaos.catalog import Drill
from lab.studies.chaos.journal import fault_window, verdict
from lab.studies.chaos.metrics import DrillInputs, drill_report
from lab.studies.chaos.runner import ledger_from_file, rule_windows_s

OFFSET = 1000.0  # wall - monotonic
KILL = Drill("kill-replica", Path("kill-replica.yaml"), {"title": "kill"}, "replica", "kill the replica", None,
             True, True, "ModelUnhealthy")
PARTITION = Drill("partition-replica", Path("p.yaml"), {}, "replica", "cut", "heal", True, False, "ModelUnhealthy")


def row(index: int, tier: str, sent: float, outcome: str, ttft: float | None = None, error: str | None = None):
    first = None if ttft is None else sent + ttft
    return DrillRequest(index, tier, sent, sent + 0.5, outcome, first, first, 200, error)


LEDGER = DrillResult(
    rows=(row(0, "vip", 96.0, "success", 0.2), row(1, "batch", 99.0, "success", 0.4),
          row(2, "vip", 100.2, "error", error="sse:upstream_broke"), row(3, "batch", 100.5, "error", error="http_503:x"),
          row(4, "vip", 101.0, "success", 0.3), row(5, "batch", 104.0, "success", 0.2),
          row(6, "vip", 110.0, "success", 0.1), row(7, "batch", 111.0, "lost", error="RemoteProtocolError")),
    started=Instant(OFFSET + 95.0, 95.0), stopped=Instant(OFFSET + 112.0, 112.0), tiers=("vip", "batch"))

WATCH = WatchLog(
    95.0, 125.0,
    replica_samples=(ReplicaSample(99.9, "replica-0", True, 0, 0), ReplicaSample(100.3, "replica-0", True, 0, 1),
                     ReplicaSample(100.8, "replica-0", False, 0, 3), ReplicaSample(120.0, "replica-0", True, 0, 0),
                     ReplicaSample(100.1, "replica-1", False, 2, 0)),  # the other replica's trouble is not ours
    gateway_events=(GatewayEvent(100.7, "ejected", "replica-0", ""), GatewayEvent(105.0, "ejected", "replica-1", ""),
                    GatewayEvent(118.5, "readmitted", "replica-0", "")),
    alert_samples=(AlertSample(60.0, "HighErrorRate", "firing", 50.0),  # active before the fault: not this drill's
                   AlertSample(102.1, "ModelUnhealthy", "pending", 102.0), AlertSample(107.0, "ModelUnhealthy", "firing", 102.0),
                   AlertSample(106.0, "NoHealthyReplica", "pending", 105.0),
                   AlertSample(113.0, "NoHealthyReplica", "firing", 105.0)))

EVENTS = (Event(OFFSET + 50.0, "replica-0", "ready"), Event(OFFSET + 100.2, "replica-0", "exited", "status -9"),
          Event(OFFSET + 101.0, "replica-0", "started"), Event(OFFSET + 115.0, "replica-0", "ready"),
          Event(OFFSET + 116.0, "replica-1", "ready"))


def journal(*runs: tuple[str, dict | None, str], status: str = "completed") -> dict:
    return {"status": status, "deviated": False, "rollbacks": [{"status": "succeeded"}],
            "steady_states": {"before": {"steady_state_met": True}, "after": {"steady_state_met": True}},
            "run": [{"activity": {"name": name, "provider": {"func": "x"}}, "status": state, "output": output}
                    for name, output, state in runs]}


def inputs(drill: Drill, journal_: dict, ledger: DrillResult | None = LEDGER) -> DrillInputs:
    return DrillInputs(drill, journal_, ledger, WATCH, EVENTS, OFFSET, "replica-0", 3.0,
                       {"ModelUnhealthy": 5.0, "NoHealthyReplica": 5.0, "HighErrorRate": 15.0}, 2.25)


def test_a_replica_kill_lines_up_client_gateway_supervisor_and_alerts() -> None:
    kill = journal(("kill the replica", {"at_monotonic_s": 100.0, "backend": "signal"}, "succeeded"))
    report = drill_report(inputs(KILL, kill))
    assert (report.fault_start_s, report.fault_duration_s, report.backend) == (100.0, None, "signal")
    assert report.counts == {"sent": 8, "success": 5, "error": 2, "timeout": 0, "connection_error": 0, "cut": 0, "lost": 1}
    assert report.success_pct == pytest.approx(62.5) and report.tier_success_pct == {"vip": 75.0, "batch": 50.0}
    # VIP successes' TTFTs 0.2, 0.3, 0.1 s: P99 = 0.2 + 0.98 * (0.3 - 0.2) by linear interpolation
    assert report.vip_ttft_p99_ms == pytest.approx(298.0)
    assert report.time_to_detect_s == pytest.approx(0.3)  # 1 request failed in a row at 100.3, before the ejection
    assert report.time_to_eject_s == pytest.approx(0.7)  # the gateway's own `ejected` at 100.7
    assert report.time_to_ready_s == pytest.approx(15.0)  # supervisor's `ready` at wall 1115 = monotonic 115
    assert report.time_to_readmit_s == pytest.approx(18.5)  # `readmitted` at 118.5, from the kill (instantaneous)
    assert report.time_to_recover_s == pytest.approx(18.5)  # the later of ready (15.0) and re-admitted (18.5)
    assert report.ejected_within_probe_intervals == pytest.approx(0.7 / 3.0)
    alerts = {a.name: a for a in report.alerts}
    assert set(alerts) == {"ModelUnhealthy", "NoHealthyReplica"}  # HighErrorRate was active before the fault
    unhealthy = alerts["ModelUnhealthy"]
    assert (unhealthy.pending_after_s, unhealthy.firing_after_s) == (pytest.approx(2.0), pytest.approx(7.0))
    assert unhealthy.on_time is True  # 107.0 - ejection 100.7 = 6.3 s <= for 5 + slack 2.25
    assert alerts["NoHealthyReplica"].on_time is False  # 113.0 - activeAt 105.0 = 8 s > 7.25
    assert report.lost == 1 and report.passed is False
    metrics = report.metrics()
    assert metrics["kill_replica_lost"] == 1.0 and metrics["kill_replica_vip_success_pct"] == 75.0
    assert metrics["kill_replica_expected_alert_fired"] == 1.0
    assert metrics["kill_replica_expected_alert_firing_after_s"] == pytest.approx(7.0)
    assert "kill_replica_fault_duration_s" not in metrics  # None is left out, never logged as a number


def test_a_partition_recovers_from_its_heal_and_a_failed_activity_fails_the_drill() -> None:
    cut = journal(("cut", {"at_monotonic_s": 100.0, "backend": "proxy"}, "succeeded"),
                  ("the gateway ejects it", None, "failed"),
                  ("heal", {"at_monotonic_s": 110.0, "backend": "proxy"}, "succeeded"))
    report = drill_report(inputs(PARTITION, cut, ledger=None))
    assert (report.fault_start_s, report.fault_duration_s, report.backend) == (100.0, 10.0, "proxy")
    assert report.time_to_readmit_s == pytest.approx(8.5)  # 118.5 - heal at 110.0
    assert report.time_to_ready_s is None  # no restart expected: the supervisor's events do not apply
    assert report.time_to_recover_s == pytest.approx(8.5)
    assert report.counts == {"sent": 0} and report.verdict.failed_activities == ("the gateway ejects it",)
    assert report.passed is False


def test_a_partial_fault_that_lets_probes_through_recovers_under_the_fault() -> None:
    reset = Drill("network-reset", Path("r.yaml"), {}, "replica", "reset", "heal", False, False, None)
    # resets from 100.0 to 125.0: the gateway ejected at 100.7 and re-admitted at 118.5, before the heal
    partial = journal(("reset", {"at_monotonic_s": 100.0, "backend": "proxy"}, "succeeded"),
                      ("heal", {"at_monotonic_s": 125.0, "backend": "proxy"}, "succeeded"))
    report = drill_report(inputs(reset, partial, ledger=None))
    assert report.time_to_readmit_s == pytest.approx(-6.5)  # 118.5 - 125.0: re-admitted while resets still came
    assert report.time_to_recover_s == 0.0  # it had recovered when the fault ended, not "-6.5 s"


def test_a_load_fault_is_its_own_window_and_a_flash_sale_its_burst() -> None:
    load = Drill("flash-sale", Path("f.yaml"), {}, "load", "flash sale", "flash sale", False, False, None)
    burst = {"started_monotonic_s": 50.0, "stopped_monotonic_s": 80.0, "burst_start_s": 8.0, "burst_end_s": 18.0}
    assert fault_window(journal(("flash sale", burst, "succeeded")), load) == (58.0, 68.0)
    plain = {"started_monotonic_s": 50.0, "stopped_monotonic_s": 80.0}
    assert fault_window(journal(("flash sale", plain, "succeeded")), load) == (50.0, 80.0)
    assert fault_window(journal(("flash sale", None, "failed")), load) == (None, None)


def test_a_deviated_journal_is_no_completed_drill() -> None:
    found = verdict({**journal(), "deviated": True, "steady_states": {"before": {"steady_state_met": True},
                                                                        "after": {"steady_state_met": False}}})
    assert (found.completed, found.steady_before, found.steady_after) == (False, True, False)


def test_the_ledger_file_round_trips_and_the_drill_rules_windows_are_read(tmp_path: Path) -> None:
    back = ledger_from_file(LEDGER.save(tmp_path / "ledger.json"))
    assert back.rows == LEDGER.rows and back.tiers == ("vip", "batch") and back.started.monotonic_s == 95.0
    assert ledger_from_file(tmp_path / "absent.json") is None
    windows = rule_windows_s()
    assert windows["ModelUnhealthy"] == 5.0 and windows["HighErrorRate"] == 15.0 and windows["AutomaticRollback"] == 0.0


def test_streams_cut_by_the_gateway_s_own_death_are_counted_not_failed() -> None:
    cut_ledger = DrillResult(rows=LEDGER.rows[:7] + (row(7, "batch", 100.1, "cut", error="RemoteProtocolError"),),
                             started=LEDGER.started, stopped=LEDGER.stopped, tiers=LEDGER.tiers)
    kill = journal(("kill", {"at_monotonic_s": 100.0, "backend": "signal"}, "succeeded"))
    gateway = Drill("kill-gateway", Path("g.yaml"), {}, "gateway", "kill", None, False, True, None)
    report = drill_report(inputs(gateway, kill, cut_ledger))
    assert (report.cut, report.lost, report.passed) == (1, 0, True)  # nothing alive could have sent an SSE error
    assert report.metrics()["kill_gateway_cut_streams"] == 1.0
    spared = drill_report(inputs(KILL, kill, cut_ledger))
    assert spared.passed is False  # the gateway lived: it owed the client an explicit error
