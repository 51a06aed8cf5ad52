"""Targets read from a `lab up` state.json, the faults by name that use them, and the watch's clock parsing.

The state files here are written by hand with `lab.service.state.write_state` (the schema `lab up` writes);
the process faults that need a live process run against tests/chaos/test_chaos_run.py's real service.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.chaos import service_faults, targets
from lab.chaos.watch import rfc3339_to_wall_s
from lab.errors import LabError
from lab.service.state import ProcessRecord, ServiceState, write_state


def record(name: str, kind: str = "replica", state: str = "ready", pid: int | None = 4321, **link) -> ProcessRecord:
    return ProcessRecord(name, kind, pid, 9000, "http://127.0.0.1:9000", "v1", 0.0, 0, state, f"/tmp/{name}.log", **link)


def state_file(tmp_path: Path, *processes: ProcessRecord) -> str:
    path = tmp_path / "state.json"
    write_state(path, ServiceState("drill", "ready", 1, "lab up", None, str(tmp_path), "http://127.0.0.1:9100",
                                   "http://127.0.0.1:9200", processes))
    return str(path)


def test_targets_come_from_the_state_file(tmp_path: Path) -> None:
    path = state_file(tmp_path, record("a", network="proxy", route_url="http://127.0.0.1:9001",
                                       proxy_control_url="http://127.0.0.1:9002"), record("gateway", "gateway", pid=77))
    assert targets.gateway_url(path) == "http://127.0.0.1:9100" and targets.prometheus_url(path) == "http://127.0.0.1:9200"
    assert targets.process_pid(path, "gateway") == 77
    assert targets.replica_link(path, "a") == {"replica": "a", "network": "proxy", "route_url": "http://127.0.0.1:9001",
                                               "proxy_control_url": "http://127.0.0.1:9002", "namespace": None}
    with pytest.raises(LabError, match="'gateway' is the service's gateway, not a replica"):
        targets.replica_link(path, "gateway")


def test_a_missing_state_file_says_to_start_the_service(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lab up --config chaos/service.yaml"):
        targets.gateway_url(str(tmp_path / "state.json"))


def test_a_process_that_is_down_has_no_pid_to_signal(tmp_path: Path) -> None:
    path = state_file(tmp_path, record("a", state="down"))
    with pytest.raises(LabError, match="a is down, not running"):
        service_faults.kill_replica(path, "a")


def test_a_link_fault_needs_something_on_the_link(tmp_path: Path) -> None:
    path = state_file(tmp_path, record("direct", network="direct"))
    with pytest.raises(LabError, match="network: proxy"):
        service_faults.degrade_link(path, "direct", "partition", {"mode": "refuse"})
    with pytest.raises(LabError, match="unknown link fault 'flood'"):
        service_faults.degrade_link(path, "direct", "flood")


def test_waiting_for_a_restart_ignores_the_killed_pid_and_is_bounded(tmp_path: Path) -> None:
    path = state_file(tmp_path, record("a", pid=11), record("b", state="failed"))
    assert targets.wait_for_process_ready(path, "a", timeout_s=1.0)["pid"] == 11
    began = time.monotonic()
    with pytest.raises(LabError, match="not ready again, after 0.3 s"):
        targets.wait_for_process_ready(path, "a", timeout_s=0.3, replaced_pid=11)  # still the old record
    assert time.monotonic() - began < 2.0
    with pytest.raises(LabError, match="the supervisor will not start it again"):
        targets.wait_for_process_ready(path, "b", timeout_s=5.0)


def test_every_summary_path_is_fresh(tmp_path: Path) -> None:
    first = Path(targets.new_summary_path(str(tmp_path / "ledgers"), "kill-replica"))
    first.write_text("{}")
    second = Path(targets.new_summary_path(str(tmp_path / "ledgers"), "kill-replica"))
    assert first != second and not second.exists() and second.parent == tmp_path / "ledgers"
    assert second.name.startswith("kill-replica-")


def test_prometheus_timestamps_with_nanoseconds_are_read() -> None:
    expected = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc).timestamp()
    assert rfc3339_to_wall_s("2026-01-02T03:04:05.123456789Z") == pytest.approx(expected)
    assert rfc3339_to_wall_s("2026-01-02T03:04:05Z") == pytest.approx(expected - 0.123456)
    assert rfc3339_to_wall_s("not a time") is None
