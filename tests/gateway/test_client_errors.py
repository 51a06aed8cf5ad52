"""A request's own bad input fails that request alone: a replica's 4xx goes back as is, never retried, never
held against the replica; 5xx before the first byte is retried but not a passive-health failure either.

Real gateway on 127.0.0.1 (lab server) in front of two purpose-built replicas (`tests.gateway.upstreams`).
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.fakes import auth
from tests.gateway.harness import metric, running_gateway
from tests.gateway.upstreams import UpstreamThread


def stats(url: str) -> dict[str, int]:
    return httpx.get(url + "/stats").json()


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_replica_4xx_reaches_the_client_as_sent_and_is_tried_once(status):
    with UpstreamThread() as a, UpstreamThread() as b, running_gateway({"a": a.url, "b": b.url}) as (client, gw):
        reply = client.post("/v1/completions", json={"model": "echo", "prompt": f"status-{status}"},
                            headers=auth("batch"))
        assert reply.status_code == status
        assert reply.json()["error"] == {"message": f"answered status-{status}", "type": "invalid_request_error",
                                         "param": None, "code": f"status_{status}"}
        assert stats(a.url).get(f"status-{status}", 0) + stats(b.url).get(f"status-{status}", 0) == 1


def test_a_poison_flood_is_not_retried_nor_held_against_any_replica():
    with UpstreamThread() as a, UpstreamThread() as b, running_gateway({"a": a.url, "b": b.url}) as (client, gw):
        poison = {"model": "echo", "prompt": "poison", "seed": 2 ** 70}
        assert all(client.post("/v1/completions", json=poison, headers=auth("batch")).status_code == 400
                   for _ in range(20))
        assert stats(a.url).get("poison", 0) + stats(b.url).get("poison", 0) == 20  # one attempt each
        text = client.get("/metrics").text
        assert metric(text, "lab_gateway_upstream_retries_total") == 0
        assert metric(text, "lab_gateway_requests_total", tier="batch", outcome="client_error") == 20
        assert metric(text, "lab_gateway_requests_total", outcome="error") == 0
        for replica in gw.traffic.replicas.values():
            assert replica.healthy and replica.consecutive_upstream_failures == 0
        assert gw.canary.stats.get("v1") is None or gw.canary.stats["v1"].errors == 0
        assert client.post("/v1/completions", json={"model": "echo", "prompt": "hi"}, headers=auth("vip")).json()[
            "choices"][0]["text"] == "ok"


def test_a_5xx_before_the_first_byte_is_retried_but_is_no_passive_health_failure():
    with UpstreamThread() as a, UpstreamThread() as b, running_gateway(
            {"a": a.url, "b": b.url}, health={"passive_failure_threshold": 1}) as (client, gw):
        reply = client.post("/v1/completions", json={"model": "echo", "prompt": "status-500"}, headers=auth("vip"))
        assert reply.status_code == 502 and reply.json()["error"]["code"] == "upstream_failed"
        assert stats(a.url)["status-500"] == stats(b.url)["status-500"] == 1  # both tried
        assert all(r.healthy for r in gw.traffic.replicas.values())  # a 500 may be the request's own doing


def test_a_4xx_on_a_streaming_request_is_json_not_a_stream():
    with UpstreamThread() as a, running_gateway({"a": a.url}) as (client, _):
        reply = client.post("/v1/completions", json={"model": "echo", "prompt": "poison", "stream": True},
                            headers=auth("vip"))
        assert reply.status_code == 400 and json.loads(reply.content)["error"]["param"] is None
