"""The restart policy with real processes: `never` leaves a dead replica down; a crash loop is given up."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lab.service.spec import PrometheusSpec, RestartPolicy, ServiceSpec
from lab.service.supervisor import Service
from tests.service.helpers import echo_replica, echo_spec, wait_for


def test_never_leaves_an_exited_replica_down(tmp_path: Path) -> None:
    with Service(echo_spec(tmp_path, replicas=1, gateway=False, prometheus=False,
                           restart=RestartPolicy("never"))) as service:
        first = service.replica("echo-0")
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: service.replica("echo-0").state == "exited", 10, "the exit noticed")
        assert (service.replica("echo-0").pid, service.replica("echo-0").restarts) == (first.pid, 0)
        assert service.pids == [first.pid]


def test_a_crash_loop_is_given_up_after_max_restarts_in_a_row(tmp_path: Path) -> None:
    poison = tmp_path / "crash"
    spec = ServiceSpec(name="loop", log_dir=tmp_path / "logs",
                       replicas=(echo_replica("echo-0", "--crash-if-exists", str(poison)),), gateway=None,
                       prometheus=PrometheusSpec(enabled=False),
                       restart=RestartPolicy(max_restarts=2, backoff_s=0.1, max_backoff_s=0.2), ready_timeout_s=30)
    with Service(spec) as service:
        poison.touch()  # from now on every start fails at once
        os.kill(service.replica("echo-0").pid, signal.SIGKILL)
        wait_for(lambda: service.replica("echo-0").state == "failed", 20, "the supervisor gave up")
        record = service.replica("echo-0")
        events = [e.event for e in service.state().events if e.process == "echo-0"]
    assert record.restarts == 2 and events == ["started", "ready", "exited", "restarting", "started", "exited",
                                               "restarting", "started", "exited", "gave_up"]
    assert "crash on purpose" in Path(record.log).read_text()  # each restart appends to the replica's log
