"""The drill load against a real gateway: every request accounted for, per-tier rates, stopping, and a lost
request caught when a fault proxy cuts the client's own connection mid-answer."""

from __future__ import annotations

import json
import socket
import time

import pytest

from lab.bench.arrivals import ConstantArrivals
from lab.chaos.loadgen import DrillLoad, LoadConfig, TierLoad, schedule
from lab.chaos.proxy_client import set_proxy_fault, start_fault_proxy
from lab.errors import LabError
from tests.chaos.services import KEYS, Service


def tiers(rate_per_s: float) -> tuple[TierLoad, ...]:
    return tuple(TierLoad.poisson(tier, key, rate_per_s) for tier, key in KEYS.items())


def test_the_schedule_is_seeded_ordered_and_bounded() -> None:
    config = LoadConfig("http://127.0.0.1:1", tiers(10.0), max_duration_s=5.0, seed=3)
    plan = schedule(config)
    assert plan == schedule(config)
    assert [t for t, _ in plan] == sorted(t for t, _ in plan) and plan[-1][0] < 5.0
    assert 25 <= sum(tier == "vip" for _, tier in plan) <= 80  # Poisson(50)


def test_a_constant_tier_sends_exactly_its_rate() -> None:
    config = LoadConfig("http://127.0.0.1:1", (TierLoad("vip", None, ConstantArrivals(4.0)),), max_duration_s=2.0)
    assert [t for t, _ in schedule(config)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"tiers": ()}, "at least one tier"),
    ({"tiers": (TierLoad.poisson("vip", None, 1), TierLoad.poisson("vip", None, 2))}, "unique"),
    ({"request_timeout_s": 0}, "request_timeout_s must be > 0"),
    ({"max_tokens": 0}, "max_tokens and max_in_flight must be >= 1"),
])
def test_bad_config_is_named(kwargs: dict, named: str) -> None:
    with pytest.raises(LabError, match=named):
        LoadConfig(**{"base_url": "http://127.0.0.1:1", "tiers": tiers(1.0), **kwargs})


def test_a_wrong_url_fails_at_start_not_at_stop() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabError, match="could not list models"):
        DrillLoad(LoadConfig(f"http://127.0.0.1:{port}", tiers(1.0), connect_timeout_s=1.0)).start()


def test_every_request_sent_is_accounted_for(service: Service) -> None:
    load = DrillLoad(LoadConfig(service.gateway_url, tiers(8.0), max_duration_s=30.0)).start()
    time.sleep(3.0)
    result = load.stop()
    counts = result.counts()
    assert sum(counts.values()) == len(result.rows) > 0
    assert counts["success"] == len(result.rows) and result.passed
    assert {r.tier for r in result.rows} == set(KEYS)
    assert 8 <= len(result.of("vip")) <= 50  # Poisson(8/s for ~3 s)
    assert sorted(r.index for r in result.rows) == [r.index for r in result.rows]


def test_the_load_stops_sending_by_itself_after_max_duration(service: Service) -> None:
    load = DrillLoad(LoadConfig(service.gateway_url, tiers(10.0), max_duration_s=1.0)).start()
    time.sleep(2.0)
    sent = len(load.rows())
    time.sleep(1.0)
    assert len(load.rows()) == sent  # nothing new after the limit
    result = load.stop()
    assert result.stopped.monotonic_s - result.started.monotonic_s < 1.5


def test_a_response_cut_mid_body_is_cut_and_fails_the_ledger(service: Service) -> None:
    gateway_port = int(service.gateway_url.rsplit(":", 1)[1])
    body = json.dumps({"model": "echo", "prompt": "x", "max_tokens": 8, "temperature": 0.0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    with start_fault_proxy(gateway_port) as front:
        with socket.create_connection(("127.0.0.1", front.listen_port), timeout=5) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + KEYS["vip"].encode()
                         + b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            answer = b""
            while data := sock.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 200")
        body_start = answer.index(b"\r\n\r\n") + 4
        # Cut halfway through the body: after a 200, before the answer is whole.
        set_proxy_fault(front.control_url, "reset", {"after_bytes": body_start + (len(answer) - body_start) // 2})
        load = DrillLoad(LoadConfig(front.url, (TierLoad("vip", KEYS["vip"], ConstantArrivals(10.0)),),
                                    model="echo", max_duration_s=1.0)).start()
        time.sleep(1.5)
        result = load.stop()
    assert result.cut == len(result.rows) > 0 and result.lost == 0  # the transport broke them: explicit, not silent
    assert not result.passed
