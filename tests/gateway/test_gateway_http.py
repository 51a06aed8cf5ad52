"""The gateway over real HTTP on 127.0.0.1, in front of replica doubles (servers in threads).

Every test runs twice: the gateway on uvicorn (the plain path) and on `lab.gateway.http_server`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from lab.gateway.app import build_app
from tests.gateway.fakes import ADMIN_KEY, FakeReplica, auth, free_port, make_config, serve, tier

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}
GATEWAY_SERVER = {"name": "uvicorn"}  # set per test by the fixture below


@pytest.fixture(autouse=True, params=["uvicorn", "lab"])
def gateway_server(request):
    GATEWAY_SERVER["name"] = request.param
    yield request.param
    GATEWAY_SERVER["name"] = "uvicorn"


@contextlib.contextmanager
def gateway(replicas: dict[str, FakeReplica | str], versions: dict[str, str] | None = None,
            **config_sections) -> Iterator[tuple[httpx.Client, object]]:
    """Serve each replica double (a str is a URL used as is), then a gateway in front of them."""
    with contextlib.ExitStack() as stack:
        specs = []
        for name, replica in replicas.items():
            url = replica if isinstance(replica, str) else stack.enter_context(serve(replica.app)).url
            specs.append({"url": url, "version": (versions or {}).get(name, "v1"), "name": name})
        config = make_config(specs, **config_sections)
        app = build_app(config, run_health=False)
        server = stack.enter_context(serve(app, GATEWAY_SERVER["name"]))
        client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
        yield client, app.state.gateway


def sample(metrics_text: str, name: str, **labels: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def total(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` with these labels (whatever its other labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_missing_or_wrong_key_gets_401_json_and_keys_do_not_cross():
    with gateway({"a": FakeReplica()}) as (client, _):
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, ADMIN):
            reply = client.post("/v1/completions", json=COMPLETION, headers=headers)
            assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/admin/replicas", headers=auth("vip")).status_code == 401
        assert client.get("/admin/replicas", headers=ADMIN).status_code == 200
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).status_code == 200


def test_tier_comes_from_the_key_not_from_headers_or_body():
    replica = FakeReplica()
    with gateway({"a": replica}) as (client, _):
        claims = {**auth("batch"), "x-priority": "0", "x-tier": "vip", "priority": "0"}
        reply = client.post("/v1/completions", json={**COMPLETION, "priority": -100, "tier": "vip"}, headers=claims)
        assert reply.status_code == 200
        client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
    assert [b["priority"] for b in replica.bodies] == [3, 0]
    assert "authorization" not in replica.headers[0]  # the client's key stays at the gateway


def test_bad_bodies_get_4xx_json():
    with gateway({"a": FakeReplica()}, proxy={"max_body_bytes": 4096}) as (client, _):
        reply = client.post("/v1/completions", content=b"{not json", headers=auth("vip"))
        assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]
        reply = client.post("/v1/completions", json={**COMPLETION, "max_tokens": -1}, headers=auth("vip"))
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "max_tokens"
        reply = client.post("/v1/completions", json={**COMPLETION, "prompt": "x" * 5000}, headers=auth("vip"))
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).status_code == 200  # still serving


def test_chat_and_completions_pass_through():
    with gateway({"a": FakeReplica("a")}) as (client, _):
        reply = client.post("/v1/chat/completions", headers=auth("realtime"),
                            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.json()["choices"][0]["message"]["content"] == "hello from a"
        assert reply.headers["x-lab-replica"] == "a"
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("async")).json()["choices"][0]["text"]


def test_stream_chunks_arrive_before_the_upstream_finishes():
    replica = FakeReplica()
    replica.chunk_delay_s = 0.3
    with gateway({"a": replica}) as (client, _):
        with client.stream("POST", "/v1/completions", json={**COMPLETION, "stream": True}, headers=auth("vip")) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            assert json.loads(first.removeprefix("data: "))["choices"][0]["text"] == "t0"
            assert not replica.stream_finished.is_set()  # a buffering proxy would only answer after this
            rest = [line for line in lines if line]
        assert replica.stream_finished.is_set() and rest[-1] == "data: [DONE]" and len(rest) == 3


def test_failing_replica_is_retried_on_another_before_the_first_byte():
    bad, good = FakeReplica("bad"), FakeReplica("good")
    bad.mode = "fail"
    # Least outstanding work ties break by name, so "a-bad" is always tried first.
    with gateway({"a-bad": bad, "b-good": good}) as (client, gw):
        replies = [client.post("/v1/completions", json=COMPLETION, headers=auth("vip")) for _ in range(3)]
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert {r.headers["x-lab-replica"] for r in replies} == {"b-good"}
        assert len(bad.bodies) == 3 and len(good.bodies) == 3
        assert sample(client.get("/metrics").text, "lab_gateway_upstream_retries_total", replica="a-bad") == 3
        assert all(r.outstanding_requests == 0 for r in gw.traffic.replicas.values())


def test_unreachable_replica_is_retried_and_all_failing_is_an_explicit_502():
    good, bad = FakeReplica("good"), FakeReplica("bad")
    dead_url = f"http://127.0.0.1:{free_port()}"
    with gateway({"a-dead": dead_url, "b-good": good}) as (client, _):
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).status_code == 200
    bad.mode = "fail"
    with gateway({"a-dead": dead_url, "b-bad": bad}) as (client, _):
        reply = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert reply.status_code == 502 and reply.json()["error"]["code"] == "upstream_failed"
        assert "a-dead" in reply.json()["error"]["message"] and "b-bad" in reply.json()["error"]["message"]


def test_empty_bucket_gets_429_with_retry_after():
    tiers = [tier("vip", 0, rps=0.5), tier("batch", 3)]
    with gateway({"a": FakeReplica()}, tiers=tiers) as (client, _):
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).status_code == 200
        reply = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert reply.status_code == 429 and reply.headers["retry-after"] == "2"  # 1 request at 0.5/s
        assert reply.json()["error"]["tier"] == "vip"
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("batch")).status_code == 200
        # Key and tier buckets have the same limits here: which one refused depends on microseconds.
        assert total(client.get("/metrics").text, "lab_gateway_requests_shed_total", tier="vip") == 1


def test_request_queued_past_its_tier_timeout_gets_an_explicit_504():
    slow = FakeReplica()
    slow.delay_s = 0.6
    tiers = [tier("vip", 0, concurrency=1, timeout_ms=150), tier("batch", 3)]
    with gateway({"a": slow}, tiers=tiers) as (client, _):
        replies: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: replies.append(
            client.post("/v1/completions", json=COMPLETION, headers=auth("vip")))) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in replies) == [200, 504]
        error = next(r for r in replies if r.status_code == 504).json()["error"]
        assert error["code"] == "queue_timeout" and error["tier"] == "vip" and error["waited_ms"] >= 150
        assert sample(client.get("/metrics").text, "lab_gateway_requests_timed_out_total", tier="vip") == 1


def test_under_overload_vip_goes_ahead_of_batch_and_nothing_is_lost():
    replica = FakeReplica()
    replica.delay_s = 0.4  # long enough that both VIP requests are queued before the first batch one ends, even on a
    # busy CI machine (with 0.15 s a slow start let four batch requests finish first)
    tiers = [tier("vip", 0, timeout_ms=5000), tier("batch", 3, concurrency=2, timeout_ms=30000)]
    with gateway({"a": replica}, tiers=tiers, queue={"max_inflight": 2}) as (client, _):
        done: list[tuple[str, int, float]] = []

        def send(tier_name: str) -> None:
            reply = client.post("/v1/completions", json=COMPLETION, headers=auth(tier_name))
            done.append((tier_name, reply.status_code, time.monotonic()))

        threads = [threading.Thread(target=send, args=("batch",)) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.1)  # the batch flood holds both slots and six wait
        vip_threads = [threading.Thread(target=send, args=("vip",)) for _ in range(2)]
        for t in vip_threads:
            t.start()
        for t in threads + vip_threads:
            t.join()
    assert len(done) == 10 and all(status == 200 for _, status, _ in done)
    order = [name for name, _, _ in sorted(done, key=lambda d: d[2])]
    assert set(order[:4]) == {"batch", "vip"} and order.count("vip") == 2
    assert max(i for i, name in enumerate(order) if name == "vip") < 5  # VIP ahead of the 6 waiting batch


def test_health_probes_eject_after_three_failures_and_readmit():
    bad, good = FakeReplica("bad"), FakeReplica("good")
    bad.mode = "fail"
    with gateway({"a-bad": bad, "b-good": good}) as (client, _):
        for round_ in range(3):
            listing = client.post("/admin/health/check", headers=ADMIN).json()
            state = {r["name"]: r["healthy"] for r in listing["replicas"]}
            assert state == {"a-bad": round_ < 2, "b-good": True}
        assert bad.bodies[-1] == {"model": "tiny", "prompt": "ping", "max_tokens": 1}  # a real tiny inference
        assert any(e["kind"] == "ejected" and "a-bad" in e["message"] for e in listing["events"])
        metrics = client.get("/metrics").text
        assert sample(metrics, "lab_gateway_replica_healthy", replica="a-bad") == 0
        assert sample(metrics, "lab_gateway_replica_ejections_total", replica="a-bad") == 1
        probes = len(bad.bodies)
        client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert len(bad.bodies) == probes  # an ejected replica gets no traffic
        bad.mode = "ok"
        listing = client.post("/admin/health/check", headers=ADMIN).json()
        assert all(r["healthy"] for r in listing["replicas"]) and listing["events"][-1]["kind"] == "readmitted"


def test_failing_canary_is_rolled_back_automatically():
    stable, canary = FakeReplica("stable"), FakeReplica("canary")
    with gateway({"s": stable, "c": canary}, versions={"c": "v2"}) as (client, _):
        versions = client.post("/admin/canary", json={"version": "v2", "percent": 50}, headers=ADMIN).json()
        assert versions["weights"] == {"v1": 50.0, "v2": 50.0} and versions["canary"]["version"] == "v2"
        canary.mode = "fail"
        for _ in range(3):
            client.post("/admin/health/check", headers=ADMIN)
        versions = client.get("/admin/versions", headers=ADMIN).json()
        assert versions["weights"] == {"v1": 100.0} and versions["canary"] is None
        assert sample(client.get("/metrics").text, "lab_gateway_rollbacks_total") == 1


def test_admin_sets_weights_and_adds_and_removes_replicas():
    one, two = FakeReplica("one"), FakeReplica("two")
    with gateway({"one": one}) as (client, _), serve(two.app) as extra:
        reply = client.post("/admin/replicas", json={"url": extra.url, "version": "v2", "name": "two"}, headers=ADMIN)
        assert {r["name"] for r in reply.json()["replicas"]} == {"one", "two"}
        assert client.put("/admin/weights", json={"weights": {"v9": 1}}, headers=ADMIN).status_code == 400
        assert client.put("/admin/weights", json={"weights": {"v2": 1}}, headers=ADMIN).json()["weights"] == {"v2": 100.0}
        reply = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert reply.headers["x-lab-replica"] == "two"
        assert client.delete("/admin/replicas/two", headers=ADMIN).status_code == 200
        assert client.delete("/admin/replicas/two", headers=ADMIN).status_code == 404
        # v2 is gone: traffic falls back to a healthy replica rather than failing
        assert client.post("/v1/completions", json=COMPLETION, headers=auth("vip")).headers["x-lab-replica"] == "one"
        assert client.delete("/admin/canary", headers=ADMIN).status_code == 400  # none running


def test_metrics_and_health_endpoints():
    with gateway({"a": FakeReplica()}) as (client, _):
        client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json()["healthy_replicas"] == 1
        text = client.get("/metrics").text
        assert sample(text, "lab_gateway_requests_admitted_total", tier="vip") == 1
        assert sample(text, "lab_gateway_requests_admitted_total", tier="batch") == 0
        assert sample(text, "lab_gateway_queue_length", tier="vip") == 0
        assert sample(text, "lab_gateway_request_latency_seconds_count", tier="vip") == 1
        assert sample(text, "lab_gateway_requests_total", tier="vip", version="v1", outcome="ok") == 1


@pytest.mark.parametrize("path", ["/v1/models"])
def test_models_listing_needs_a_key(path):
    with gateway({"a": FakeReplica()}) as (client, _):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=auth("batch")).json()["data"][0]["id"] == "tiny"


def test_client_leaving_mid_stream_gives_back_its_slot_and_closes_the_upstream():
    replica = FakeReplica()
    replica.chunk_delay_s = 0.5
    with gateway({"a": replica}) as (client, gw):
        with client.stream("POST", "/v1/completions", json={**COMPLETION, "stream": True}, headers=auth("vip")) as r:
            lines = r.iter_lines()  # held: a dropped line iterator closes the response early
            next(line for line in lines if line)
            assert gw.queue.core.inflight("vip") == 1 and gw.traffic.replicas["a"].outstanding_requests == 1
        deadline = time.monotonic() + 3
        while (gw.queue.core.inflight("vip") or gw.traffic.replicas["a"].outstanding_requests) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gw.queue.core.inflight("vip") == 0 and gw.traffic.replicas["a"].outstanding_requests == 0
        time.sleep(1.6)  # the whole upstream stream takes 1.5 s
        assert not replica.stream_finished.is_set()  # it was cut when the client left, not read to the end
        metrics = client.get("/metrics").text
        assert sample(metrics, "lab_gateway_requests_total", tier="vip", outcome="client_closed") == 1
        assert sample(metrics, "lab_gateway_requests_total", tier="vip", outcome="error") == 0


def test_replica_breaking_mid_stream_ends_the_stream_with_an_error_event():
    replica = FakeReplica()
    replica.mode = "break"
    with gateway({"a": replica}) as (client, gw):
        with client.stream("POST", "/v1/completions", json={**COMPLETION, "stream": True}, headers=auth("vip")) as r:
            events = [line for line in r.iter_lines() if line]
        assert len(events) == 2 and json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_broke"
        time.sleep(0.1)
        assert gw.queue.core.inflight() == 0 and gw.traffic.replicas["a"].outstanding_requests == 0
        assert sample(client.get("/metrics").text, "lab_gateway_requests_total", tier="vip", outcome="error") == 1


def test_operator_canary_abort_is_not_counted_as_an_automatic_rollback():
    with gateway({"s": FakeReplica(), "c": FakeReplica()}, versions={"c": "v2"}) as (client, _):
        assert client.post("/admin/canary", json={"version": "v2"}, headers=ADMIN).json()["weights"] == \
            {"v1": 99.0, "v2": 1.0}
        assert client.delete("/admin/canary", headers=ADMIN).json()["weights"] == {"v1": 100.0}
        assert sample(client.get("/metrics").text, "lab_gateway_rollbacks_total") == 0


def _send_in_threads(client, tier_name: str, n: int, done: list) -> list[threading.Thread]:
    """Start `n` threads that each send one completion as `tier_name` and append (tier, status, body, seconds)."""
    def send() -> None:
        started = time.monotonic()
        reply = client.post("/v1/completions", json=COMPLETION, headers=auth(tier_name))
        done.append((tier_name, reply.status_code, reply.json(), time.monotonic() - started))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_under_overload_with_batch_holding_every_slot_vip_all_succeed_by_preempting_batch():
    replica = FakeReplica()
    replica.delay_s = 1.0
    tiers = [{**tier("vip", 0, timeout_ms=500), "preempt_after_ms": 50, "preempts": ["batch"]},
             tier("batch", 3, concurrency=8, timeout_ms=30000)]
    with gateway({"a": replica}, tiers=tiers, queue={"max_inflight": 4}) as (client, gw):
        done: list[tuple[str, int, dict, float]] = []
        batch = _send_in_threads(client, "batch", 8, done)
        time.sleep(0.3)  # batch holds all 4 slots and 4 more wait
        vip = _send_in_threads(client, "vip", 4, done)
        for t in batch + vip:
            t.join()
        metrics = client.get("/metrics").text
        assert gw.queue.core.inflight() == 0 and gw.traffic.replicas["a"].outstanding_requests == 0
    assert len(done) == 12  # every request ended with a response or an explicit error
    vip_done = [d for d in done if d[0] == "vip"]
    assert [d[1] for d in vip_done] == [200] * 4
    assert all(d[3] < 1.0 + 0.5 + 0.4 for d in vip_done)  # replica's 1 s + less than VIP's 500 ms queue timeout
    batch_statuses = sorted(d[1] for d in done if d[0] == "batch")
    assert batch_statuses == [200] * 4 + [503] * 4  # batch absorbs the shedding
    preempted = [d[2]["error"] for d in done if d[1] == 503]
    assert all(e["code"] == "preempted" and e["tier"] == "batch" for e in preempted)
    assert sample(metrics, "lab_gateway_requests_preempted_total", tier="batch") == 4
    assert sample(metrics, "lab_gateway_requests_timed_out_total", tier="vip") == 0


def test_batch_borrows_idle_slots_and_gives_them_back_to_vip_at_once_with_an_explicit_error():
    replica = FakeReplica()
    replica.delay_s = 1.0
    # VIP may not preempt anyone within their share: only the slots batch borrowed come back to it.
    tiers = [tier("vip", 0, timeout_ms=500),
             {**tier("batch", 3, concurrency=8, timeout_ms=30000), "max_inflight_share": 0.5, "borrow": True}]
    with gateway({"a": replica}, tiers=tiers, queue={"max_inflight": 4}) as (client, gw):
        done: list[tuple[str, int, dict, float]] = []
        batch = _send_in_threads(client, "batch", 6, done)
        time.sleep(0.3)
        assert gw.queue.core.inflight("batch") == 4 and gw.queue.core.borrowed("batch") == 2  # 2 above its share
        vip = _send_in_threads(client, "vip", 2, done)
        for t in batch + vip:
            t.join()
        metrics = client.get("/metrics").text
        assert gw.queue.core.inflight() == 0 and gw.traffic.replicas["a"].outstanding_requests == 0
    assert len(done) == 8  # every request ended with a response or an explicit error
    vip_done = [d for d in done if d[0] == "vip"]
    assert [d[1] for d in vip_done] == [200] * 2
    assert all(d[3] < 1.0 + 0.3 for d in vip_done)  # the replica's 1 s and no wait: the slots came back at once
    assert sorted(d[1] for d in done if d[0] == "batch") == [200] * 4 + [503] * 2  # the 2 borrowed, given back
    preempted = [d[2]["error"] for d in done if d[1] == 503]
    assert all(e["code"] == "preempted" and e["tier"] == "batch" and "borrowed" in e["message"] for e in preempted)
    assert sample(metrics, "lab_gateway_requests_preempted_total", tier="batch") == 2
    assert sample(metrics, "lab_gateway_requests_reclaimed_total", tier="batch") == 2


def test_a_preempted_stream_ends_with_an_explicit_error_event():
    replica = FakeReplica()
    replica.chunk_delay_s = 0.4
    tiers = [{**tier("vip", 0, timeout_ms=500), "preempt_after_ms": 50, "preempts": ["batch"]},
             tier("batch", 3, timeout_ms=30000)]
    with gateway({"a": replica}, tiers=tiers, queue={"max_inflight": 1}) as (client, gw):
        with client.stream("POST", "/v1/completions", json={**COMPLETION, "stream": True}, headers=auth("batch")) as r:
            lines = r.iter_lines()
            assert json.loads(next(line for line in lines if line).removeprefix("data: "))["choices"][0]["text"] == "t0"
            vip = client.post("/v1/completions", json=COMPLETION, headers=auth("vip"))
            rest = [line for line in lines if line]
        assert vip.status_code == 200
        assert json.loads(rest[-1].removeprefix("data: "))["error"]["code"] == "preempted"
        assert not replica.stream_finished.is_set() or len(rest) < 3  # cut, not read to its end
        time.sleep(0.1)
        assert gw.queue.core.inflight() == 0 and gw.traffic.replicas["a"].outstanding_requests == 0
        metrics = client.get("/metrics").text
        assert sample(metrics, "lab_gateway_requests_total", tier="batch", outcome="preempted") == 1
