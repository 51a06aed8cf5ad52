"""A hung engine core process (SIGSTOP) turns `/health` and `/ready` to 503 with a reason, and back after SIGCONT.

The core sends a batch at least every second, even idle; a replica started with
`--engine-iteration-timeout-s 2` that hears nothing for 2 s must answer its probes, and new
requests, 503 `engine_unresponsive` naming the silence, so a gateway's probes and an orchestrator
see it; once the core runs again (SIGCONT) the probes are 200 and requests are served.
"""
from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.server.conftest import ENGINE_ITERATION_TIMEOUT_S, engine_core_pids

TIMEOUT_S = ENGINE_ITERATION_TIMEOUT_S  # the shared fault_server's --engine-iteration-timeout-s
DETECT_WITHIN_S = 15.0  # the timeout, plus a heartbeat, plus slack for two shared cores
RECOVER_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def replica(fault_server):
    """The session's replica started with `--engine-iteration-timeout-s 2` (the fault tests' one, faults cleared)."""
    return fault_server


def _wait_for(url: str, status: int, within_s: float) -> tuple[float, httpx.Response]:
    start = time.monotonic()
    while True:
        answer = httpx.get(url, timeout=10)
        elapsed = time.monotonic() - start
        if answer.status_code == status or elapsed > within_s:
            return elapsed, answer
        time.sleep(0.2)


def test_a_stopped_core_is_reported_503_and_recovers_after_sigcont(replica):
    [core] = engine_core_pids(replica)
    assert httpx.get(f"{replica.url}/health", timeout=10).status_code == 200
    os.kill(core, signal.SIGSTOP)
    try:
        elapsed, health = _wait_for(f"{replica.url}/health", 503, DETECT_WITHIN_S)
        assert health.status_code == 503, f"/health still {health.status_code} {elapsed:.1f}s after SIGSTOP"
        error = health.json()["error"]
        assert error["code"] == "engine_unresponsive" and str(core) in error["message"], error
        assert elapsed >= TIMEOUT_S - 1.0  # not before the limit: a slow step is not a hang
        ready = httpx.get(f"{replica.url}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "engine_unresponsive"
        refused = httpx.post(f"{replica.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unresponsive"
    finally:
        os.kill(core, signal.SIGCONT)
    for probe in ("/health", "/ready"):
        elapsed, answer = _wait_for(f"{replica.url}{probe}", 200, RECOVER_WITHIN_S)
        assert answer.status_code == 200, f"{probe} still {answer.status_code} {elapsed:.1f}s after SIGCONT"
    served = httpx.post(f"{replica.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "ignore_eos": True},
                        timeout=60)
    assert served.status_code == 200 and served.json()["usage"]["completion_tokens"] == 2


def test_an_idle_core_is_not_mistaken_for_a_hung_one(replica):
    time.sleep(3 * TIMEOUT_S)  # idle for longer than the limit: its heartbeats keep it healthy
    for probe in ("/health", "/ready"):
        assert httpx.get(f"{replica.url}{probe}", timeout=10).status_code == 200
