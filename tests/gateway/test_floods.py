"""Targets under hostile load: a wrong-key flood, a poison-request flood from one batch key, a thousand idle or
slow connections. Each time a legitimate VIP request still succeeds with its latency (its TTFT: the answer is
one token) within VIP's 500 ms queue budget plus the unloaded latency, and no replica is ejected.

Real processes on 127.0.0.1: `lab gateway` and its upstreams; the flood comes from threads of the test process,
bounded in count and stopped as soon as the VIP requests are measured.
"""

from __future__ import annotations

import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from lab.gateway.auth import hash_key
from lab.tiers import tier as tier_spec
from tests.gateway.fakes import ADMIN_KEY, auth
from tests.gateway.processes import gateway_mapping, gateway_process, upstream_process

VIP_BUDGET_S = tier_spec("vip").timeout_s  # 500 ms
COMPLETION = {"model": "echo", "prompt": "hi", "max_tokens": 1}
PERSON_KEY = "correct horse battery staple"  # a key a person chose: stored as pbkdf2, slow to check


def vip_latencies(url: str, count: int, gap_s: float = 0.05) -> list[float]:
    """Seconds per VIP request, sent one after another on one keep-alive connection; each must succeed."""
    seconds = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            started = time.monotonic()
            reply = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
            seconds.append(time.monotonic() - started)
            assert reply.status_code == 200, reply.text
            time.sleep(gap_s)
    return seconds


def ready_latencies(url: str, count: int) -> list[float]:
    """Seconds per `GET /ready` on one keep-alive connection (the probe a load balancer sends); each 200."""
    seconds = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/health")  # connected before timing
        for _ in range(count):
            started = time.monotonic()
            assert client.get("/ready").status_code == 200
            seconds.append(time.monotonic() - started)
    return seconds


def unloaded(url: str) -> float:
    vip_latencies(url, 3, 0)  # warm-up: connections, caches
    return statistics.median(vip_latencies(url, 10, 0.01))


def flood(url: str, send: Callable[[httpx.Client], int], threads: int = 6, cap: int = 400) -> tuple[
        threading.Event, list[int], list[threading.Thread]]:
    """Threads that call `send(client)` until told to stop or `cap` requests each; statuses collected."""
    stop, statuses = threading.Event(), []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(cap):
                if stop.is_set():
                    return
                statuses.append(send(client))

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)  # the flood is under way
    return stop, statuses, workers


def all_healthy(url: str) -> bool:
    listing = httpx.get(url + "/admin/replicas", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    return all(r["healthy"] for r in listing["replicas"])


def test_a_wrong_key_flood_costs_one_slow_check_and_vip_keeps_its_budget(tmp_path):
    with upstream_process("lab.studies.gateway_latency.upstream") as (upstream, _):
        config = gateway_mapping({"a": upstream})
        config["keys"].append({"name": "person", "tier": "batch", "hash": hash_key(PERSON_KEY, "pbkdf2")})
        with gateway_process(config, tmp_path) as url:
            baseline = unloaded(url)
            wrong = {"Authorization": "Bearer sk-a-wrong-guess"}
            stop, statuses, workers = flood(url, lambda c: c.post("/v1/completions", json=COMPLETION,
                                                                  headers=wrong).status_code)
            try:
                during = vip_latencies(url, 15)
                ready_s = max(ready_latencies(url, 5))
            finally:
                stop.set()
                for worker in workers:
                    worker.join(60)
            assert len(statuses) >= 50 and set(statuses) == {401}
            assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
            assert ready_s < VIP_BUDGET_S
            person = {"Authorization": f"Bearer {PERSON_KEY}"}  # the slow key itself still works
            assert httpx.post(url + "/v1/completions", json=COMPLETION, headers=person).status_code == 200
            assert all_healthy(url)


def test_a_poison_flood_from_one_batch_key_ejects_nothing_and_vip_keeps_its_budget(tmp_path):
    with upstream_process() as (a, _), upstream_process() as (b, _), \
            gateway_process(gateway_mapping({"a": a, "b": b}), tmp_path) as url:
        baseline = unloaded(url)
        poison = {"model": "echo", "prompt": "poison", "seed": 2 ** 70, "max_tokens": 1}
        stop, statuses, workers = flood(url, lambda c: c.post("/v1/completions", json=poison,
                                                              headers=auth("batch")).status_code)
        try:
            during = vip_latencies(url, 15)
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)
        assert len(statuses) >= 50 and set(statuses) == {400}
        assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
        seen = sum(httpx.get(u + "/stats").json().get("poison", 0) for u in (a, b))
        assert seen == len(statuses)  # each poison request reached one replica, once: never retried
        assert all_healthy(url)


@pytest.mark.parametrize("max_connections", [2048, 256])  # the default, and a cap the idle sockets overrun
def test_a_thousand_idle_and_slow_connections_leave_room_for_vip(tmp_path, max_connections):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with upstream_process("lab.studies.gateway_latency.upstream") as (upstream, _), gateway_process(
            gateway_mapping({"a": upstream}, server={"max_connections": max_connections}), tmp_path) as url:
        baseline = unloaded(url)
        port = int(url.rsplit(":", 1)[1])
        sockets = []
        try:
            for i in range(1000):  # half say nothing, half send a head that never ends (slowloris)
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
                sockets.append(sock)
            time.sleep(0.3)
            during = vip_latencies(url, 10)
        finally:
            for sock in sockets:
                sock.close()
        assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
        assert all_healthy(url)
