"""A real `lab serve` replica (tiny, 2 layers, CPU) behind the real gateway, scraped by a real Prometheus.

What only a real engine shows: its vLLM-named series reach Prometheus under the replica's labels, a
SIGKILL to the server leaves no engine-core child behind (the supervisor ends the whole process group), and
a dead engine core, which leaves the HTTP server up but unable to serve (`/health` 503 `engine_dead`), gets
the replica restarted as an exit would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from lab.chaos.processes import find_engine_core
from lab.service.spec import ReplicaProcess, lab_serve_command
from lab.service.supervisor import Service
from tests.service.helpers import AUTH, alive, echo_spec, group_members, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
                                reason="prometheus absent (apt-get install -y prometheus)")
TINY = lab_serve_command("lab", "tiny", "cpu", ("--hf-overrides", json.dumps({"num_hidden_layers": 2}),
                                                "--log-level", "warning"))


def test_a_real_replica_serves_is_scraped_and_leaves_no_child_when_killed(tmp_path: Path) -> None:
    spec = dataclasses.replace(echo_spec(tmp_path, replicas=1), replicas=(ReplicaProcess("tiny-0", TINY),),
                               ready_timeout_s=240)
    with Service(spec) as service:
        reply = httpx.post(service.gateway_url + "/v1/completions", headers=AUTH, timeout=60,
                           json={"model": "tiny", "prompt": "hello", "max_tokens": 4, "temperature": 0})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4
        series = wait_for(lambda: service.prometheus.query('vllm:num_requests_running{job="lab-replica"}'), 30,
                          "the replica's vLLM series in Prometheus")
        assert [(s["metric"]["replica"], s["metric"]["version"]) for s in series] == [("tiny-0", "v1")]
        ups = wait_for(lambda: len(found := service.prometheus.query("up == 1")) == 2 and found, 30, "both targets up")
        assert sorted(s["metric"]["job"] for s in ups) == ["lab-gateway", "lab-replica"]

        server = service.replica("tiny-0").pid
        group = group_members(server)
        assert len(group) >= 2  # the HTTP server and its engine core (and multiprocessing's helpers)
        os.kill(server, signal.SIGKILL)  # the server only: its engine core would be orphaned
        wait_for(lambda: not any(map(alive, group)), 20, "the whole group of the killed replica ended")
        wait_for(lambda: service.replica("tiny-0").pid != server, 20, "a restart under way")
        second = service.wait_ready("tiny-0", timeout_s=240, replaced_pid=server).pid

        os.kill(find_engine_core(second), signal.SIGKILL)  # the server lives on, its engine never serves again
        third = service.wait_ready("tiny-0", timeout_s=240, replaced_pid=second).pid
        assert third != second
        events = [e.event for e in service.state().events if e.process == "tiny-0"]
        assert "engine_dead" in events[events.index("ready", events.index("started", 2)):]
        wait_for(lambda: httpx.post(service.gateway_url + "/v1/completions", headers=AUTH, timeout=60,
                                    json={"model": "tiny", "prompt": "hello", "max_tokens": 4}).status_code == 200,
                 60, "the restarted replica re-admitted by the gateway and serving")
        pids = service.pids
    assert [pid for pid in pids if alive(pid)] == [] and [p for pid in pids for p in group_members(pid)] == []
