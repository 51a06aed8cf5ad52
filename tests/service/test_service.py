"""A real service: two replica processes, the real gateway, a real Prometheus; faults, restarts, a clean stop.

One service serves the whole module (starting it costs seconds); the tests run in file order and the last
one stops it. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from lab.service.state import downtimes, read_state
from lab.service.supervisor import Service
from tests.service.helpers import AUTH, COMPLETION, alive, echo_spec, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
                                reason="prometheus absent (apt-get install -y prometheus)")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    service = Service(echo_spec(tmp_path_factory.mktemp("service")))
    with service:
        yield service


def complete(service: Service) -> httpx.Response:
    return httpx.post(service.gateway_url + "/v1/completions", json=COMPLETION, headers=AUTH, timeout=10)


def test_a_request_through_the_gateway_reaches_a_replica(service: Service) -> None:
    reply = complete(service)
    assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "ok"
    assert reply.headers["x-lab-replica"] in ("echo-0", "echo-1")


def test_the_gateway_config_lists_every_replica_url(service: Service) -> None:
    text = (service.log_dir / "gateway.yaml").read_text()
    assert all(service.replica(name).url in text for name in ("echo-0", "echo-1"))


def test_prometheus_scrapes_every_target_and_sees_them_up(service: Service) -> None:
    def ups() -> list[tuple[str, str | None, str]] | None:
        found = sorted((s["metric"]["job"], s["metric"].get("replica"), s["value"][1])
                       for s in service.prometheus.query("up"))
        return found if len(found) == 3 and all(value == "1" for *_, value in found) else None

    # Prometheus starts before the gateway, so a first scrape may fail: wait until each target is up.
    assert wait_for(ups, 30, "three targets scraped, every one up") == [
        ("lab-gateway", None, "1"), ("lab-replica", "echo-0", "1"), ("lab-replica", "echo-1", "1")]


def test_prometheus_has_the_gateways_series_per_replica(service: Service) -> None:
    series = wait_for(lambda: service.prometheus.query("lab_gateway_replica_healthy"), 20, "gateway series")
    labels = sorted((s["metric"]["replica"], s["metric"]["version"]) for s in series)
    assert labels == [("echo-0", "v1"), ("echo-1", "v1")]


def test_every_alert_rule_evaluates_against_the_scraped_series(service: Service) -> None:
    def evaluated() -> list[dict] | None:
        rules = service.prometheus.rules()
        never = "0001-01-01T00:00:00Z"  # Prometheus's zero time: not evaluated yet
        return rules if rules and all(r["lastEvaluation"] != never for r in rules) else None

    rules = wait_for(evaluated, 20, "a round of rule evaluations")
    assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_a_killed_replica_comes_back_on_its_port_and_its_downtime_is_recorded(service: Service) -> None:
    before = service.replica("echo-0")
    os.kill(before.pid, signal.SIGKILL)
    after = service.wait_ready("echo-0", timeout_s=20, replaced_pid=before.pid)
    assert (after.port, after.restarts) == (before.port, before.restarts + 1) and not alive(before.pid)
    state = read_state(service.state_path)
    (down,) = downtimes(state.events, "echo-0")
    assert 0 < down.seconds < 10  # exited -> restarting (0.2 s backoff) -> started -> ready
    assert [e.event for e in state.events if e.process == "echo-0"][-4:] == ["exited", "restarting", "started", "ready"]
    assert complete(service).status_code == 200


def test_a_hung_replica_fires_the_drill_alert_for_it(service: Service) -> None:
    hung = service.replica("echo-1")
    os.kill(hung.pid, signal.SIGSTOP)  # alive to the supervisor, dead to the gateway's probes
    try:
        alert = service.prometheus.wait_for_alert("ModelUnhealthy", "firing", timeout_s=40)
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert alert["labels"]["replica"] == "echo-1"
    assert service.replica("echo-1").pid == hung.pid  # a hang is not an exit: no restart


def test_restart_by_name_keeps_the_gateway_port(service: Service) -> None:
    before = service.process("gateway")
    after = service.restart("gateway")
    assert after.pid != before.pid and after.port == before.port and after.restarts == before.restarts + 1
    wait_for(lambda: complete(service).status_code == 200, 20, "the restarted gateway serves")


def test_stop_ends_every_process_it_started(service: Service) -> None:
    pids = service.pids
    assert len(pids) >= 6  # 2 replicas, gateway, Prometheus, echo-0's and the gateway's restarts
    service.stop()
    assert [pid for pid in pids if alive(pid)] == []
    state = json.loads(service.state_path.read_text())
    assert state["status"] == "stopped" and {p["state"] for p in state["processes"]} == {"stopped"}
