"""A replica that stops answering: its requests end within their tier's budget (retried elsewhere, or an explicit
error event), and it is ejected fast (probes, and passively between them), then re-admitted once it answers.

Real gateways on 127.0.0.1; the hung replica is a real process frozen with SIGSTOP, or a purpose-built one.
The probe interval used here is 1 s (probe timeout 0.3 s): the target is ejection within 3 intervals.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.gateway.fakes import auth, free_port, tier
from tests.gateway.harness import metric, running_gateway
from tests.gateway.processes import upstream_process
from tests.gateway.upstreams import UpstreamThread

INTERVAL_S, PROBE_TIMEOUT_S = 1.0, 0.3
SLACK_S = 1.5  # on top of a budget: a retry's own round trip and a busy 2-core machine
COMPLETION = {"model": "echo", "prompt": "hi", "max_tokens": 1}


def tiers(**vip: int) -> list[dict]:
    return [{**tier("vip", 0), **vip}, tier("realtime", 1), tier("async", 2), tier("batch", 3)]


def wait_for(condition, timeout_s: float) -> float:
    """Seconds until `condition()` held (polled every 20 ms); fails past `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_sigstopped_replica_is_ejected_within_3_probe_intervals_its_request_retried_and_readmitted():
    with upstream_process("lab.studies.gateway_latency.upstream") as (a_url, a_proc), \
            upstream_process("lab.studies.gateway_latency.upstream") as (b_url, _), \
            running_gateway({"a": a_url, "b": b_url}, run_health=True, tiers=tiers(first_byte_timeout_ms=1500),
                            health={"interval_s": INTERVAL_S, "probe_timeout_s": PROBE_TIMEOUT_S}) as (client, gw):
        a = gw.traffic.replicas["a"]
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).headers["x-lab-replica"] == "a"
        os.kill(a_proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        # Least outstanding work breaks ties by name: "a" is tried first, hangs, and the request moves to "b".
        reply = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert reply.status_code == 200 and reply.headers["x-lab-replica"] == "b"
        assert time.monotonic() - stopped < 1.5 + SLACK_S  # VIP's first-byte budget, not the 600 s read timeout
        wait_for(lambda: not a.healthy, 3 * INTERVAL_S + 5)
        ejected_after_s = time.monotonic() - stopped
        assert ejected_after_s <= 3 * INTERVAL_S, f"ejected {ejected_after_s:.2f} s after the hang"
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).headers["x-lab-replica"] == "b"
        os.kill(a_proc.pid, signal.SIGCONT)
        assert wait_for(lambda: a.healthy, 2 * INTERVAL_S + SLACK_S) <= 2 * INTERVAL_S + SLACK_S
        assert [e.kind for e in gw.traffic.events if e.replica == "a"][-2:] == ["ejected", "readmitted"]


@pytest.mark.parametrize("upstream_client", ["lab", "aiohttp"])
def test_a_stream_that_stalls_mid_way_ends_with_an_error_event_within_the_stall_budget(upstream_client):
    with UpstreamThread() as a, running_gateway({"a": a.url}, tiers=tiers(stall_timeout_ms=500),
                                                proxy={"client": upstream_client}) as (client, gw):
        started = time.monotonic()
        with client.stream("POST", "/v1/completions", json={"model": "echo", "prompt": "stall", "stream": True},
                           headers=auth("vip")) as reply:
            events = [json.loads(line.removeprefix("data: ")) for line in reply.iter_lines() if line]
        assert time.monotonic() - started < 0.5 + SLACK_S
        assert events[0]["choices"][0]["text"] == "t0" and events[-1]["error"]["code"] == "upstream_timeout"
        assert metric(client.get("/metrics").text, "lab_gateway_requests_total", tier="vip", outcome="error") == 1
        assert gw.traffic.replicas["a"].consecutive_upstream_failures == 1


@pytest.mark.parametrize("upstream_client", ["lab", "aiohttp"])
def test_consecutive_upstream_timeouts_eject_a_replica_before_any_probe(upstream_client):
    # The health loop is off; the probe timeout only bounds the admin check below (default 10 s: a hung wait).
    with UpstreamThread(hang=True) as a, UpstreamThread() as b, running_gateway(
            {"a": a.url, "b": b.url}, tiers=tiers(first_byte_timeout_ms=300),
            health={"probe_timeout_s": PROBE_TIMEOUT_S}, proxy={"client": upstream_client}) as (client, gw):
        replies = [client.post("/v1/completions", json=COMPLETION, headers=auth("vip")) for _ in range(3)]
        assert [(r.status_code, r.headers["x-lab-replica"]) for r in replies] == [(200, "b")] * 3
        assert not gw.traffic.replicas["a"].healthy  # 3 timeouts in a row; no probe round ran (health loop off)
        assert "timed out or could not connect" in gw.traffic.events[-1].message
        started = time.monotonic()
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).headers["x-lab-replica"] == "b"
        assert time.monotonic() - started < 0.3  # straight to "b": no budget spent on "a" any more
        listing = client.post("/admin/health/check", headers={"Authorization": "Bearer sk-test-admin"}).json()
        assert {r["name"]: r["healthy"] for r in listing["replicas"]} == {"a": False, "b": True}  # probes hang too


def test_connection_failures_eject_a_replica_passively_and_a_passing_probe_readmits_it():
    dead = f"http://127.0.0.1:{free_port()}"
    with UpstreamThread() as b, running_gateway({"a": dead, "b": b.url}) as (client, gw):
        for _ in range(3):
            assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).status_code == 200
        assert not gw.traffic.replicas["a"].healthy
        assert metric(client.get("/metrics").text, "lab_gateway_replica_ejections_total", replica="a") == 1


def test_a_non_streaming_answer_gets_the_first_byte_budget_plus_its_tokens_at_the_minimum_pace():
    with UpstreamThread() as a, running_gateway({"a": a.url}, tiers=tiers(first_byte_timeout_ms=300),
                                                proxy={"min_tokens_per_s": 10.0}) as (client, gw):
        slow = {"model": "echo", "prompt": "slow-0.6", "max_tokens": 8}  # due within 0.3 + 8 / 10 = 1.1 s
        assert client.post("/v1/completions", json=slow, headers=auth("vip")).status_code == 200
        reply = client.post("/v1/completions", json={**slow, "max_tokens": 1}, headers=auth("vip"))  # 0.4 s
        assert reply.status_code == 502 and "budget" in reply.json()["error"]["message"]


def test_requests_slow_by_their_own_doing_are_not_held_against_a_replica_that_answers_others():
    with UpstreamThread() as a, running_gateway({"a": a.url}, tiers=tiers(first_byte_timeout_ms=400)) as (client, gw):
        stop = threading.Event()

        def others() -> None:  # steady traffic the replica does answer
            with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
                for _ in range(400):
                    if stop.is_set():
                        return
                    assert other.post("/v1/completions", json=COMPLETION, headers=auth("batch")).status_code == 200
                    time.sleep(0.03)

        worker = threading.Thread(target=others, daemon=True)
        worker.start()
        slow = {"model": "echo", "prompt": "hang", "max_tokens": 1, "stream": True}
        replies: list[httpx.Response] = []
        senders = [threading.Thread(target=lambda: replies.append(
            client.post("/v1/completions", json=slow, headers=auth("vip")))) for _ in range(4)]
        try:
            time.sleep(0.1)
            for sender in senders:  # together: their timeouts fire back to back, with no answer between them
                sender.start()
            for sender in senders:
                sender.join(10)
        finally:
            stop.set()
            worker.join(10)
        assert [r.json()["error"]["code"] for r in replies] == ["upstream_failed"] * 4  # each ends within its budget
        a_state = gw.traffic.replicas["a"]
        assert a_state.healthy and a_state.consecutive_upstream_failures == 0
