"""The drill runner end to end on a real service: two real `lab serve` replicas (tiny, 2 layers, CPU), each behind
a real fault proxy (or in a lab namespace where the netns backend works), the real gateway, a real Prometheus
with the drill rules, and chaostoolkit's own runner on the experiment files of chaos/.

What must hold on any machine, loaded or not: the fault ran and was undone, nothing was lost, the gateway
ejected the target within 3 probe intervals and re-admitted it, the supervisor restarted a killed replica,
and the numbers line up with the journal. The issue's throughput targets (>= 99 % through a kill) are
measured by notebook 09, not asserted here: a 2-core CI box starving a restarting replica is a finding,
not a broken build. Each test starts its own service and is bounded (< ~90 s) by the drill's own timeouts.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lab.studies.chaos.config import DrillStudyConfig
from lab.studies.chaos.plots import drill_table
from lab.studies.chaos.runner import DrillStudy, run_drills
from tests.scheduling import NETWORK_NAMESPACES

pytestmark = [pytest.mark.skipif(shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
                                 reason="prometheus absent (apt-get install -y prometheus)"),
              NETWORK_NAMESPACES, pytest.mark.long_running(90)]
pytest.importorskip("chaoslib")
PROBE_INTERVAL_S = 2.0


def config(drill: str, load_s: float) -> DrillStudyConfig:
    return DrillStudyConfig(drills=(drill,), hf_overrides={"num_hidden_layers": 2}, probe_interval_s=PROBE_INTERVAL_S,
                            probe_timeout_s=1.3, max_tokens=2, rates_per_s={"vip": 1.0, "batch": 1.0},
                            load_duration_s={drill: load_s}, fault_duration_s=5.0, fault_after_s=2.0,
                            eject_timeout_s=20.0, recover_timeout_s=45.0, max_vip_ttft_p99_ms=5000.0,
                            min_success_rate=0.5,  # the steady-state bar of a loaded CI box; the drill's numbers are reported
                            ready_timeout_s=120.0, settle_timeout_s=60.0, warmup_s=2.0)


def explain(study: DrillStudy) -> str:
    """What a failed assertion should show: the drill's numbers and where its logs are."""
    return json.dumps(drill_table(study), indent=1, default=str)


def test_a_replica_kill_is_ejected_restarted_and_readmitted_with_nothing_lost(tmp_path: Path) -> None:
    began = time.monotonic()
    study = run_drills(config("kill-replica", 35.0), tmp_path)
    (report,) = study.reports
    why = explain(study)
    assert report.verdict.status == "completed" and report.verdict.rollbacks == ("succeeded",), why
    assert report.backend == "signal" and report.counts["sent"] > 0 and report.lost == 0, why
    assert report.time_to_eject_s is not None and report.time_to_eject_s <= 3 * PROBE_INTERVAL_S, why
    assert report.time_to_detect_s is not None and report.time_to_detect_s <= report.time_to_eject_s, why
    assert report.time_to_ready_s is not None and report.time_to_readmit_s is not None, why
    assert report.time_to_recover_s == pytest.approx(max(report.time_to_ready_s, report.time_to_readmit_s))
    journal = json.loads(study.journals[0].read_text())
    (kill,) = [r for r in journal["run"] if r["activity"]["name"] == "kill the replica"]
    assert kill["output"]["at_monotonic_s"] == report.fault_start_s and kill["output"]["target_name"] == "replica-0"
    ledger = json.loads((tmp_path / "ledgers" / "kill-replica.json").read_text())
    assert ledger["summary"]["sent"] == report.counts["sent"] and ledger["summary"]["lost"] == 0
    assert study.metrics()["kill_replica_lost"] == 0.0
    assert time.monotonic() - began < 150  # bounded: the drill's timeouts end it even when a step fails
