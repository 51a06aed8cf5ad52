"""`LocalService` starts a real upstream and a real `lab gateway` as processes, and stops them (bounded waits)."""

from __future__ import annotations

import os
import sys
import time

import httpx
import pytest

from lab.errors import LabError
from lab.gateway.auth import hash_key
from lab.studies.launcher import LocalService, LocalServiceConfig, ReplicaSpec

MINIMAL = (sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--port", "{port}")
KEY = "sk-local-service-test"
GATEWAY = {"keys": [{"name": "t", "tier": "batch", "hash": hash_key(KEY)}], "health": {"interval_s": 3600}}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_request_goes_through_the_real_gateway_and_close_stops_both_processes(tmp_path) -> None:
    config = LocalServiceConfig(gateway_config=GATEWAY, replica_command=MINIMAL, ready_timeout_s=60,
                                stop_timeout_s=10, log_dir=tmp_path)
    started = time.monotonic()
    with LocalService(config) as service:
        pids = service.pids
        assert len(pids) == 2 and all(map(alive, pids))
        body = {"model": "echo", "prompt": "hi", "max_tokens": 1}
        reply = httpx.post(service.gateway_url + "/v1/completions", json=body,
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "ok"
        assert reply.headers["x-lab-replica"] == "replica-0"  # it went through the gateway to our replica
        assert httpx.post(service.gateway_url + "/v1/completions", json={}, timeout=10).status_code == 401
        assert service.replica_url in (tmp_path / "gateway.yaml").read_text()
    assert not any(map(alive, pids))  # reaped by close(), not just signalled
    assert time.monotonic() - started < 60


def test_a_replica_that_dies_at_start_raises_with_its_log_and_leaves_nothing_running(tmp_path) -> None:
    crash = (sys.executable, "-c", "import sys; print('boom at start'); sys.exit(3)", "{port}")
    service = LocalService(LocalServiceConfig(gateway_config=GATEWAY, replica_command=crash, ready_timeout_s=30,
                                              stop_timeout_s=5, log_dir=tmp_path))
    with pytest.raises(LabError, match="boom at start"):
        service.start()
    assert len(service.pids) == 1 and not alive(service.pids[0])  # the gateway never started


def test_config_mistakes_fail_before_any_process_starts() -> None:
    with pytest.raises(LabError, match="replicas"):
        LocalServiceConfig(gateway_config={"replicas": []})
    with pytest.raises(LabError, match="--port"):
        LocalServiceConfig(gateway_config={}, replica=ReplicaSpec(extra_flags=("--port", "1")))
    with pytest.raises(LabError, match="{port}"):
        LocalServiceConfig(gateway_config={}, replica_command=("python", "-m", "x"))
