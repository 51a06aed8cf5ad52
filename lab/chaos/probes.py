"""Probes of the gateway: its /metrics (Prometheus text) and /admin/replicas, as chaostoolkit probes.

Contract:
- `scrape(gateway_url)`: every sample of `GET /metrics`, parsed with prometheus_client's parser, as
  `{family: [{"name", "labels", "value"}]}` (JSON-able).
- `replica_state(gateway_url, replica, admin_key=None)`: "healthy" or "ejected". With the admin key it
  reads `GET /admin/replicas` (and the record has `consecutive_failures` and `last_error`), without it
  the `lab_gateway_replica_healthy{replica=...}` gauge. An unknown replica is a `LabError` naming the ones
  there are. `replica_is_healthy` / `replica_is_ejected` are the boolean forms for `tolerance: true`.
- `wait_for_replica_state(gateway_url, replica, state, timeout_s)`: polls until the replica is in `state`
  and returns when (monotonic and wall time, and seconds waited), or raises `LabError` at the timeout:
  time to eject or to re-admit, measured from a fault record's `at_monotonic_s`.
- `gateway_success_rate(gateway_url, tier=None, window_s=0)`: ok / (ok + error + preempted + queue
  timeouts) from `lab_gateway_requests_total` and `lab_gateway_requests_timed_out_total`: what the
  service failed, not what the client did (client_error, client_closed) nor rate limiting (429s are the
  policy working). Since the gateway started, or over the last `window_s` (two scrapes); None when no
  request counted.
- `gateway_window(before, after)`: both, overall success and VIP TTFB P99, between two scrapes.
- `gateway_ttft_p99_ms(gateway_url, tier="vip", window_s=0)`: the P99 of
  `lab_gateway_time_to_first_byte_seconds` by Prometheus' `histogram_quantile` rule (linear within the
  bucket); None when empty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lab.errors import LabError

__all__ = [
    "scrape",
    "replica_state",
    "replica_is_healthy",
    "replica_is_ejected",
    "wait_for_replica_state",
    "gateway_success_rate",
    "gateway_ttft_p99_ms",
]

HTTP_TIMEOUT_S = 5.0
POLL_S = 0.1
STATES = ("healthy", "ejected")


def _get(url: str, headers: dict | None = None) -> httpx.Response:
    try:
        response = httpx.get(url, headers=headers or {}, timeout=HTTP_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as error:
        raise LabError(f"GET {url} failed: {type(error).__name__}: {error}") from None
    if response.status_code != 200:
        raise LabError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
    return response


def scrape(gateway_url: str) -> dict[str, list[dict]]:
    text = _get(f"{gateway_url.rstrip('/')}/metrics").text
    return {family.name: [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in family.samples]
            for family in text_string_to_metric_families(text)}


def _samples(metrics: dict, name: str, **labels: str) -> Iterable[dict]:
    for samples in metrics.values():
        for sample in samples:
            if sample["name"] == name and all(sample["labels"].get(k) == v for k, v in labels.items()):
                yield sample


def replica_state(gateway_url: str, replica: str, admin_key: str | None = None) -> dict:
    if admin_key:
        snapshot = _get(f"{gateway_url.rstrip('/')}/admin/replicas", {"Authorization": f"Bearer {admin_key}"}).json()
        replicas = {r["name"]: r for r in snapshot.get("replicas", [])}
        if replica not in replicas:
            raise LabError(f"the gateway has no replica {replica!r}; it has {', '.join(replicas) or 'none'}")
        r = replicas[replica]
        return {"replica": replica, "state": "healthy" if r["healthy"] else "ejected",
                "consecutive_failures": r["consecutive_failures"], "last_error": r["last_error"], "source": "admin"}
    metrics = scrape(gateway_url)
    found = list(_samples(metrics, "lab_gateway_replica_healthy", replica=replica))
    if not found:
        names = sorted({s["labels"].get("replica") for s in _samples(metrics, "lab_gateway_replica_healthy")})
        raise LabError(f"the gateway has no replica {replica!r}; it has {', '.join(names) or 'none'}")
    return {"replica": replica, "state": "healthy" if found[0]["value"] >= 1 else "ejected", "source": "metrics"}


def replica_is_healthy(gateway_url: str, replica: str, admin_key: str | None = None) -> bool:
    return replica_state(gateway_url, replica, admin_key)["state"] == "healthy"


def replica_is_ejected(gateway_url: str, replica: str, admin_key: str | None = None) -> bool:
    return replica_state(gateway_url, replica, admin_key)["state"] == "ejected"


def wait_for_replica_state(gateway_url: str, replica: str, state: str, timeout_s: float = 60.0,
                           admin_key: str | None = None) -> dict:
    if state not in STATES:
        raise LabError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    start = time.monotonic()
    while True:
        seen = replica_state(gateway_url, replica, admin_key)
        now = time.monotonic()
        if seen["state"] == state:
            return {**seen, "waited_s": now - start, "at_monotonic_s": now, "at_wall_s": time.time()}
        if now - start >= timeout_s:
            raise LabError(f"replica {replica!r} still {seen['state']}, not {state}, after {timeout_s} s")
        time.sleep(POLL_S)


def _outcome_counts(metrics: dict, tier: str | None) -> dict[str, float]:
    counts: dict[str, float] = {}
    labels = {} if tier is None else {"tier": tier}
    for sample in _samples(metrics, "lab_gateway_requests_total", **labels):
        outcome = sample["labels"].get("outcome", "")
        counts[outcome] = counts.get(outcome, 0.0) + sample["value"]
    counts["timed_out"] = sum(s["value"] for s in _samples(metrics, "lab_gateway_requests_timed_out_total", **labels))
    return counts


def _two_scrapes(gateway_url: str, window_s: float) -> tuple[dict | None, dict]:
    if window_s < 0:
        raise LabError(f"window_s must be >= 0, got {window_s}")
    if window_s == 0:
        return None, scrape(gateway_url)
    first = scrape(gateway_url)
    time.sleep(window_s)
    return first, scrape(gateway_url)


def gateway_success_rate(gateway_url: str, tier: str | None = None, window_s: float = 0.0) -> float | None:
    before, after = _two_scrapes(gateway_url, window_s)
    now = _outcome_counts(after, tier)
    then = _outcome_counts(before, tier) if before is not None else {}
    delta = {k: v - then.get(k, 0.0) for k, v in now.items()}
    failed = delta.get("error", 0.0) + delta.get("preempted", 0.0) + delta.get("timed_out", 0.0)
    total = delta.get("ok", 0.0) + failed
    return None if total <= 0 else delta.get("ok", 0.0) / total


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' rule: (upper bound, cumulative count) pairs -> the q-quantile, linear within a bucket."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the +Inf bucket: the highest finite bound, as Prometheus answers
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


def _ttfb_buckets(metrics: dict, tier: str) -> dict[float, float]:
    return {float(s["labels"]["le"]): s["value"]
            for s in _samples(metrics, "lab_gateway_time_to_first_byte_seconds_bucket", tier=tier)}


def gateway_window(before: dict, after: dict, vip_tier: str = "vip") -> dict:
    """The gateway's success rate and VIP TTFB P99 between two `scrape()`s (a steady-state sample's window)."""
    now, then = _outcome_counts(after, None), _outcome_counts(before, None)
    delta = {k: v - then.get(k, 0.0) for k, v in now.items()}
    failed = delta.get("error", 0.0) + delta.get("preempted", 0.0) + delta.get("timed_out", 0.0)
    total = delta.get("ok", 0.0) + failed
    buckets_now, buckets_then = _ttfb_buckets(after, vip_tier), _ttfb_buckets(before, vip_tier)
    p99 = histogram_quantile(0.99, [(le, n - buckets_then.get(le, 0.0)) for le, n in buckets_now.items()])
    return {"success_rate": None if total <= 0 else delta.get("ok", 0.0) / total, "counted": total,
            "vip_ttfb_p99_ms": None if p99 is None else p99 * 1000.0}


def gateway_ttft_p99_ms(gateway_url: str, tier: str = "vip", window_s: float = 0.0) -> float | None:
    before, after = _two_scrapes(gateway_url, window_s)
    now = _ttfb_buckets(after, tier)
    then = _ttfb_buckets(before, tier) if before is not None else {}
    quantile = histogram_quantile(0.99, [(le, count - then.get(le, 0.0)) for le, count in now.items()])
    return None if quantile is None else quantile * 1000.0
