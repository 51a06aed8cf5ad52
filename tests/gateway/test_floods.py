"""Targets under hostile load: a wrong-key flood, a poison-request flood from one batch key, a thousand idle or
slow connections. Each time a legitimate VIP request still succeeds with its latency (its TTFT: the answer is
one token) within VIP's 500 ms queue budget plus the unloaded latency, and no replica is ejected.

Real processes on 127.0.0.1: `lab gateway` and its upstreams; the floods are `lab.chaos.hostile_load`'s (what the
flood drills run), from threads of the test process, bounded in time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from lab.chaos.hostile_load import flood_poison, flood_wrong_keys, hold_idle_connections
from lab.gateway.auth import hash_key
from lab.tiers import tier as tier_spec
from tests.gateway.fakes import ADMIN_KEY, KEYS, auth
from tests.gateway.processes import gateway_mapping, gateway_process, upstream_process

VIP_BUDGET_S = tier_spec("vip").timeout_s  # 500 ms
COMPLETION = {"model": "echo", "prompt": "hi", "max_tokens": 1}
FLOOD_S = 4.0  # long enough to cover the VIP requests measured meanwhile
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


def in_background(action: Callable[..., dict], *args, settle_s: float = 0.3, **kwargs) -> Future:
    """A `lab.chaos.hostile_load` flood (it blocks for its duration) started in a thread, under way on return."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(action, *args, **kwargs)
    pool.shutdown(wait=False)
    time.sleep(settle_s)
    return future


def all_healthy(url: str) -> bool:
    listing = httpx.get(url + "/admin/replicas", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    return all(r["healthy"] for r in listing["replicas"])


def test_a_wrong_key_flood_costs_one_slow_check_and_vip_keeps_its_budget(tmp_path):
    with upstream_process("lab.studies.gateway_latency.upstream") as (upstream, _):
        config = gateway_mapping({"a": upstream})
        config["keys"].append({"name": "person", "tier": "batch", "hash": hash_key(PERSON_KEY, "pbkdf2")})
        with gateway_process(config, tmp_path) as url:
            baseline = unloaded(url)
            flooding = in_background(flood_wrong_keys, url, duration_s=FLOOD_S, distinct=False)
            during = vip_latencies(url, 15)
            ready_s = max(ready_latencies(url, 5))
            statuses = flooding.result(timeout=FLOOD_S + 60)["statuses"]
            assert sum(statuses.values()) >= 50 and set(statuses) == {"401"}, statuses
            assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
            assert ready_s < VIP_BUDGET_S
            person = {"Authorization": f"Bearer {PERSON_KEY}"}  # the slow key itself still works
            assert httpx.post(url + "/v1/completions", json=COMPLETION, headers=person).status_code == 200
            assert all_healthy(url)


def test_a_poison_flood_from_one_batch_key_ejects_nothing_and_vip_keeps_its_budget(tmp_path):
    with upstream_process() as (a, _), upstream_process() as (b, _), \
            gateway_process(gateway_mapping({"a": a, "b": b}), tmp_path) as url:
        baseline = unloaded(url)
        poison = {"model": "echo", "prompt": "poison", "seed": 2 ** 70, "max_tokens": 1}  # the fake's poison
        flooding = in_background(flood_poison, url, api_key=KEYS["batch"],
                                 duration_s=FLOOD_S, bodies=[poison])
        during = vip_latencies(url, 15)
        statuses = flooding.result(timeout=FLOOD_S + 60)["statuses"]
        # 400 from a replica; 429 once the batch key's own rate limit turns the rest away at the gateway.
        assert statuses.get("400", 0) >= 50 and set(statuses) <= {"400", "429"}, statuses
        assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
        seen = sum(httpx.get(u + "/stats").json().get("poison", 0) for u in (a, b))
        assert seen == statuses["400"]  # each poison request let through reached one replica, once: never retried
        assert all_healthy(url)


@pytest.mark.parametrize("max_connections", [2048, 256])  # the default, and a cap the idle sockets overrun
def test_a_thousand_idle_and_slow_connections_leave_room_for_vip(tmp_path, max_connections):
    with upstream_process("lab.studies.gateway_latency.upstream") as (upstream, _), gateway_process(
            gateway_mapping({"a": upstream}, server={"max_connections": max_connections}), tmp_path) as url:
        baseline = unloaded(url)
        holding = in_background(hold_idle_connections, url, duration_s=FLOOD_S, count=1000, settle_s=1.0)
        during = vip_latencies(url, 10)
        held = holding.result(timeout=FLOOD_S + 60)
        assert held["opened"] == 1000 and held["refused"] == 0, held
        assert max(during) <= baseline + VIP_BUDGET_S, f"VIP {max(during):.3f} s, unloaded {baseline:.3f} s"
        assert all_healthy(url)
