"""The issue's targets and the plots, from the hand-made drill of tests/studies/test_chaos_metrics.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.studies.chaos.catalog import Drill
from lab.studies.chaos.config import DrillStudyConfig
from lab.studies.chaos.metrics import drill_report
from lab.studies.chaos.plots import drill_table, plot_outcomes, plot_timeline
from lab.studies.chaos.runner import DrillStudy
from lab.studies.chaos.targets import target_metrics, target_rows
from tests.studies.test_chaos_metrics import KILL, inputs, journal

KILLED = journal(("kill the replica", {"at_monotonic_s": 100.0, "backend": "signal"}, "succeeded"))


def study() -> DrillStudy:
    report = drill_report(inputs(KILL, KILLED))
    config = DrillStudyConfig(drills=("kill-replica",), probe_interval_s=3.0, probe_timeout_s=2.0)
    return DrillStudy(config, {"backend": "proxy", "reason": "test"}, (report,), (), 10.0, 60.0)


def test_the_kill_targets_are_measured_against_the_issue_s_bars() -> None:
    rows = {row.target: row for row in target_rows(study())}
    assert set(rows) == {"nothing_lost", "nothing_cut", "success", "vip_success", "ejected", "readmitted", "alert",
                         "recovery_measured"}
    assert rows["nothing_cut"].met  # the ledger's broken stream is `lost` here, not `cut`
    assert (rows["nothing_lost"].met, rows["nothing_lost"].measured) == (False, "1 lost")
    assert (rows["success"].met, rows["success"].measured) == (False, "62.5 %")  # below 99 %
    assert (rows["vip_success"].met, rows["vip_success"].measured) == (False, "75.0 %")
    assert rows["ejected"].met and "9 s at 3 s" in rows["ejected"].wanted  # 0.7 s <= 3 probe intervals
    assert rows["alert"].met and rows["readmitted"].met and rows["recovery_measured"].met
    metrics = target_metrics(target_rows(study()))
    assert metrics["kill_replica_target_ejected_met"] == 1.0 and metrics["kill_replica_target_success_met"] == 0.0
    assert metrics["targets_met_pct"] == 100.0 * 5 / 8


def test_the_plots_draw_every_request_and_every_mark() -> None:
    outcomes = plot_outcomes(study())
    (ax,) = outcomes.axes
    drawn = sum(len(collection.get_offsets()) for collection in ax.collections)
    assert drawn == 8  # every request of the ledger, each at its send time
    timeline = plot_timeline(study())
    labels = {text.get_text() for text in timeline.axes[0].texts}
    assert {"detected", "ejected", "ready again", "re-admitted", "ModelUnhealthy firing"} <= labels


def test_the_table_has_one_row_per_drill_with_its_headline_numbers() -> None:
    (row,) = drill_table(study())
    assert (row["drill"], row["lost"], row["success_pct"], row["eject_s"], row["recover_s"]) == \
        ("kill-replica", 1, 62.5, 0.7, 18.5)
    assert row["alerts"]["ModelUnhealthy"] == {"pending_s": 2.0, "firing_s": 7.0, "on_time": True}


def test_a_flood_is_held_to_vip_s_budget_over_its_unloaded_p99_and_to_no_ejection() -> None:
    flood = Drill("flood-poison", Path("f.yaml"), {}, "load", "flood", "flood", False, False, None, hostile=True)
    window = {"started_monotonic_s": 100.0, "stopped_monotonic_s": 110.0, "backend": "load"}
    report = drill_report(inputs(flood, journal(("flood", window, "succeeded"))))
    # VIP successes sent before 100: TTFT 0.2 s; inside [100, 110): 0.3 s (the 100.2 one failed). The gateway
    # ejected replica-0 at 100.7 and replica-1 at 105.0: both count, whichever replica.
    assert (report.vip_ttft_p99_before_ms, report.vip_ttft_p99_during_ms) == (pytest.approx(200.0), pytest.approx(300.0))
    assert report.ejections == 2
    config = DrillStudyConfig(drills=("flood-poison",), probe_interval_s=3.0, probe_timeout_s=2.0)
    rows = {row.target: row for row in target_rows(DrillStudy(config, {}, (report,), (), 10.0, 60.0))}
    assert rows["vip_within_budget"].met and rows["vip_within_budget"].measured == "300 ms (unloaded 200 ms)"
    assert not rows["nothing_ejected"].met and rows["nothing_ejected"].measured == "2 ejections"
    assert "ejected" not in rows and "success" not in rows  # no kill, no ejection expected
