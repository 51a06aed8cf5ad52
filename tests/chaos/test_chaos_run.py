"""chaostoolkit's own `chaos run` executes the experiment files of chaos/ against a `lab.service` service.

Each test starts the service of `tests/chaos/lab_up.py` (what `lab up` runs: two replicas behind fault
proxies, the gateway), runs `chaos run` on an experiment with the environment a user gives it (the state
file, keys, tunables; bounded by `CHAOS_RUN_TIMEOUT_S`) and reads its journal: the steady-state hypothesis
held before and after, the fault and its undo ran on the target named in state.json, the drill lost
nothing, and the rollback ran. A variant whose method fails midway (a probe that cannot succeed, and no
undo in the method) shows that the rollback alone undoes the fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from lab.chaos.proxy_client import proxy_status
from tests.chaos.lab_up import drill_env, drill_service

pytest.importorskip("chaoslib")
ROOT = Path(__file__).resolve().parents[2]
CHAOS_RUN_TIMEOUT_S = 240


@pytest.fixture
def service(tmp_path: Path):
    with drill_service(tmp_path) as started:
        yield started


def chaos_run(experiment: Path, workdir: Path, env: dict[str, str]) -> tuple[dict, subprocess.CompletedProcess]:
    journal = workdir / "journal.json"
    chaos = Path(sys.executable).with_name("chaos")
    done = subprocess.run(
        [str(chaos), "--no-version-check", "--log-file", str(workdir / "chaostoolkit.log"),
         "--settings", str(workdir / "settings.yaml"), "run", str(experiment), "--journal-path", str(journal)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=CHAOS_RUN_TIMEOUT_S)
    assert journal.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(journal.read_text()), done


def runs_named(journal: dict, name: str) -> list[dict]:
    return [run for run in journal.get("run", []) if run["activity"]["name"] == name]


def assert_held_and_nothing_lost(journal: dict, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert journal["status"] == "completed" and journal["deviated"] is False
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    (load,) = runs_named(journal, "drill load")
    assert load["output"]["lost"] == 0 and load["output"]["sent"] > 0
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]


def test_partition_experiment_holds_and_rolls_back(service, tmp_path: Path) -> None:
    journal, done = chaos_run(ROOT / "chaos" / "partition-replica.yaml", tmp_path, drill_env(service, tmp_path))
    assert_held_and_nothing_lost(journal, done)
    (cut,) = runs_named(journal, "degrade the link (partition)")
    control = service.replica("replica-0").proxy_control_url
    assert cut["output"]["backend"] == "proxy" and cut["output"]["target"] == control
    (ejected,) = runs_named(journal, "the gateway ejects it")
    assert ejected["status"] == "succeeded" and ejected["output"]["state"] == "ejected"
    assert proxy_status(control)["faults"] == {}


def test_hang_experiment_holds_and_rolls_back(service, tmp_path: Path) -> None:
    pid = service.replica("replica-0").pid
    journal, done = chaos_run(ROOT / "chaos" / "hang-replica.yaml", tmp_path, drill_env(service, tmp_path))
    assert_held_and_nothing_lost(journal, done)
    (hang,) = runs_named(journal, "hang the replica")
    assert hang["output"]["stopped"] is True and hang["output"]["pid"] == pid
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED


def test_kill_experiment_sees_the_supervisor_restart_the_replica(service, tmp_path: Path) -> None:
    pid = service.replica("replica-0").pid
    journal, done = chaos_run(ROOT / "chaos" / "kill-replica.yaml", tmp_path, drill_env(service, tmp_path))
    assert_held_and_nothing_lost(journal, done)
    (ready,) = runs_named(journal, "the supervisor has it ready again")
    assert ready["status"] == "succeeded" and ready["output"]["pid"] != pid and ready["output"]["restarts"] == 1
    assert service.replica("replica-0").pid == ready["output"]["pid"]


def test_the_rollback_resumes_a_replica_when_the_method_fails_midway(service, tmp_path: Path) -> None:
    experiment = yaml.safe_load((ROOT / "chaos" / "hang-replica.yaml").read_text())
    experiment["steady-state-hypothesis"]["probes"] = [
        p for p in experiment["steady-state-hypothesis"]["probes"] if p["name"] == "the replica is in service"]
    hang = next(a for a in experiment["method"] if a["name"] == "hang the replica")
    broken = {"type": "probe", "name": "wait for a replica that does not exist",
              "provider": {"type": "python", "module": "lab.chaos.probes", "func": "wait_for_replica_state",
                           "arguments": {"gateway_url": "${gateway_url}", "replica": "no-such-replica",
                                         "state": "ejected", "timeout_s": 1, "admin_key": "${admin_key}"}}}
    experiment["method"] = [hang, broken]  # no resume in the method: only the rollback can undo the hang
    path = tmp_path / "hang-then-fail.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    pid = service.replica("replica-0").pid
    journal, _ = chaos_run(path, tmp_path, drill_env(service, tmp_path))
    (failed,) = runs_named(journal, "wait for a replica that does not exist")
    assert failed["status"] == "failed" and "no-such-replica" in failed["exception"][-1]
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
