"""Every experiment file of chaos/ is a valid chaostoolkit experiment and a drill the study can read.

chaostoolkit's own validation imports each Python activity and checks its arguments against the function's
signature, so a renamed argument or function fails here, not halfway through a drill.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import LabError
from lab.studies.chaos.catalog import load_drill
from lab.studies.chaos.config import DrillStudyConfig, experiments_dir

chaoslib = pytest.importorskip("chaoslib")
DRILLS = sorted(p.stem for p in experiments_dir().glob("*.yaml") if p.stem != "service")
COMMON_KEYS = ("state_path", "replica", "vip_key", "batch_key", "admin_key", "summary_path", "vip_rate_per_s",
               "batch_rate_per_s", "max_tokens", "fault_after_s", "load_duration_s", "eject_timeout_s",
               "recover_timeout_s", "min_success_rate", "max_vip_ttft_p99_ms")


def test_the_issue_s_drills_are_all_there() -> None:
    assert set(DRILLS) >= {"kill-replica", "hang-replica", "kill-engine-core", "drain-replica", "kill-gateway",
                           "network-latency", "network-loss", "network-reset", "partition-replica", "overload-tier",
                           "flash-sale"}


@pytest.mark.parametrize("name", DRILLS)
def test_a_drill_file_is_valid_and_undoes_its_fault(name: str) -> None:
    from chaoslib.experiment import ensure_experiment_is_valid

    drill = load_drill(name)
    ensure_experiment_is_valid(drill.experiment)
    assert drill.experiment["runtime"]["rollbacks"]["strategy"] == "always"
    names = [a["name"] for a in drill.experiment["method"]]
    assert drill.fault_start in names and (drill.fault_end is None or drill.fault_end in names)
    if drill.target != "load":  # a load stops by itself; every other fault has a rollback
        assert drill.experiment["rollbacks"], name
    probes = [p["name"] for p in drill.experiment["steady-state-hypothesis"]["probes"]]
    assert "the drill lost no request" in probes
    # the tunables every drill takes: a key the file lacks would be ignored by chaostoolkit without a word
    assert set(COMMON_KEYS) <= set(drill.experiment["configuration"]), name


def test_every_tunable_the_study_passes_is_read_by_some_drill() -> None:
    keys = set().union(*(load_drill(name).experiment["configuration"] for name in DRILLS))
    assert set(DrillStudyConfig().experiment_vars("kill-replica")) <= keys


def test_a_file_without_the_lab_drill_block_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bare.yaml").write_text("title: t\ndescription: d\nmethod: [{type: action, name: a}]\n")
    with pytest.raises(LabError, match="lab-drill"):
        load_drill("bare", tmp_path)
    (tmp_path / "typo.yaml").write_text("title: t\nmethod: [{name: a}]\n"
                                        "extensions: [{name: lab-drill, target: replica, fault_start: b}]\n")
    with pytest.raises(LabError, match="no activity of its method"):
        load_drill("typo", tmp_path)


def test_the_study_config_refuses_an_unknown_drill_and_one_replica() -> None:
    with pytest.raises(LabError, match="unknown"):
        DrillStudyConfig(drills=("kill-everything",))
    with pytest.raises(LabError, match="at least 2"):
        DrillStudyConfig(replicas=1)
    with pytest.raises(LabError, match="must outlast the fault"):
        DrillStudyConfig(drills=("flash-sale",), load_duration_s={"flash-sale": 10.0}, fault_after_s=3.0,
                         fault_duration_s=10.0)
    with pytest.raises(LabError, match="hf_overrides: a mapping"):
        DrillStudyConfig(hf_overrides='{"num_hidden_layers": 2}')  # a JSON string, as `papermill -p` passes it
