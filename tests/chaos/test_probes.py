"""Probes of a real gateway's /metrics and /admin/replicas, and Prometheus' histogram_quantile rule."""

from __future__ import annotations

import httpx
import pytest

from lab.chaos import network, probes
from lab.chaos.probes import histogram_quantile
from lab.errors import LabError
from tests.chaos.services import ADMIN_KEY, KEYS, Service


def complete(service: Service, tier: str = "vip") -> int:
    body = {"model": "echo", "prompt": "x", "max_tokens": 1}
    response = httpx.post(f"{service.gateway_url}/v1/completions", json=body,
                          headers={"Authorization": f"Bearer {KEYS[tier]}"}, timeout=10, trust_env=False)
    return response.status_code


def test_the_scrape_is_parsed_into_families(shared_service: Service) -> None:
    metrics = probes.scrape(shared_service.gateway_url)
    healthy = {s["labels"]["replica"]: s["value"] for s in metrics["lab_gateway_replica_healthy"]}
    assert healthy == {"replica-a": 1.0, "replica-b": 1.0}


@pytest.mark.parametrize("admin_key", [ADMIN_KEY, None])
def test_a_replica_in_service_is_healthy_from_either_source(shared_service: Service, admin_key: str | None) -> None:
    state = probes.replica_state(shared_service.gateway_url, "replica-b", admin_key)
    assert state["state"] == "healthy" and state["source"] == ("admin" if admin_key else "metrics")


@pytest.mark.parametrize("admin_key", [ADMIN_KEY, None])
def test_an_unknown_replica_is_named_with_the_known_ones(shared_service: Service, admin_key: str | None) -> None:
    with pytest.raises(LabError, match="no replica 'replica-z'; it has replica-a, replica-b"):
        probes.replica_state(shared_service.gateway_url, "replica-z", admin_key)


def test_a_wrong_admin_key_is_a_clear_error(shared_service: Service) -> None:
    with pytest.raises(LabError, match="answered 401"):
        probes.replica_state(shared_service.gateway_url, "replica-a", "sk-wrong")


def test_a_partitioned_replica_is_seen_ejected_then_healthy(shared_service: Service) -> None:
    control = shared_service.proxy.control_url
    fault = network.partition("refuse", proxy_url=control)
    try:
        ejected = probes.wait_for_replica_state(shared_service.gateway_url, "replica-a", "ejected", 20, ADMIN_KEY)
        assert ejected["at_monotonic_s"] > fault["at_monotonic_s"] and ejected["consecutive_failures"] >= 3
        assert probes.replica_is_ejected(shared_service.gateway_url, "replica-a")
    finally:
        network.clear_network_faults(proxy_url=control)
    assert probes.wait_for_replica_state(shared_service.gateway_url, "replica-a", "healthy", 20)["state"] == "healthy"


def test_waiting_past_the_timeout_is_an_error(shared_service: Service) -> None:
    with pytest.raises(LabError, match="still healthy, not ejected, after 0.3 s"):
        probes.wait_for_replica_state(shared_service.gateway_url, "replica-b", "ejected", 0.3)


def test_success_rate_counts_the_gateway_s_answers(shared_service: Service) -> None:
    assert [complete(shared_service) for _ in range(3)] == [200, 200, 200]
    assert probes.gateway_success_rate(shared_service.gateway_url, tier="vip") == 1.0


def test_a_window_without_requests_has_no_success_rate(shared_service: Service) -> None:
    assert probes.gateway_success_rate(shared_service.gateway_url, tier="batch", window_s=0.2) is None


def test_vip_ttft_p99_comes_from_the_gateway_histogram(shared_service: Service) -> None:
    complete(shared_service)
    p99_ms = probes.gateway_ttft_p99_ms(shared_service.gateway_url, "vip")
    assert p99_ms is not None and 0 < p99_ms <= 120_000  # within the histogram's buckets


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    # 100 observations: 50 <= 0.1 s, 90 <= 0.5 s, all <= 1 s. Rank 99 lies 9/10 into (0.5, 1.0].
    assert histogram_quantile(0.99, [(0.1, 50), (0.5, 90), (1.0, 100), (float("inf"), 100)]) == pytest.approx(0.95)
    assert histogram_quantile(0.5, [(0.1, 50), (0.5, 90), (1.0, 100), (float("inf"), 100)]) == pytest.approx(0.1)


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 10), (float("inf"), 100)]) == 0.1


def test_an_empty_histogram_has_no_quantile() -> None:
    assert histogram_quantile(0.99, [(0.1, 0), (float("inf"), 0)]) is None


def sample(name: str, value: float, **labels: str) -> dict:
    return {"name": name, "labels": labels, "value": value}


def gateway_scrape(ok: float, error: float, timed_out: float, buckets: list[tuple[str, float]]) -> dict:
    """A `scrape()` of the gateway as the parser returns it, with hand-set counters."""
    return {"lab_gateway_requests": [sample("lab_gateway_requests_total", ok, tier="vip", outcome="ok"),
                                     sample("lab_gateway_requests_total", error, tier="batch", outcome="error"),
                                     sample("lab_gateway_requests_total", 7.0, tier="batch", outcome="client_error")],
            "lab_gateway_requests_timed_out": [sample("lab_gateway_requests_timed_out_total", timed_out, tier="vip")],
            "lab_gateway_time_to_first_byte_seconds": [
                sample("lab_gateway_time_to_first_byte_seconds_bucket", n, tier="vip", le=le) for le, n in buckets]}


def test_the_gateway_window_counts_only_what_happened_between_two_scrapes() -> None:
    before = gateway_scrape(10, 1, 0, [("0.1", 5), ("0.5", 10), ("+Inf", 10)])
    after = gateway_scrape(100, 2, 1, [("0.1", 55), ("0.5", 100), ("+Inf", 100)])
    window = probes.gateway_window(before, after)
    # 90 ok, 1 error, 1 queue timeout in the window (client errors are the client's): 90 / 92
    assert window["counted"] == 92 and window["success_rate"] == pytest.approx(90 / 92)
    # 90 TTFBs in the window, 50 <= 0.1 s, all <= 0.5 s: rank 89.1 lies 39.1/40 into (0.1, 0.5]
    assert window["vip_ttfb_p99_ms"] == pytest.approx((0.1 + 0.4 * 39.1 / 40) * 1000)
