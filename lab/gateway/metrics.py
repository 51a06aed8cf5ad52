"""Gateway metrics in Prometheus format, on a registry owned by one app (no global state).

Contract: `GatewayMetrics(traffic, queue)` owns a `CollectorRegistry`; the app serves
`render()` on `/metrics`. Counters and histograms are updated on the request path; gauges of
state (queue length, in flight, replica health and outstanding work, version weights) are read
from `Traffic` and the queue at scrape time, so they can never drift from the truth.
Names start with `lab_gateway_`; `METRIC_NAMES` lists every family, for the alert-rules test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lab.gateway.queue import PriorityAdmission
from lab.gateway.traffic import Traffic

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

OUTCOMES = ("ok", "error", "client_error", "client_closed", "preempted")  # of lab_gateway_requests_total
SHED_BUCKETS = ("key requests", "key tokens", "tier requests", "tier tokens")  # lab.gateway.buckets' labels

METRIC_NAMES = (
    "lab_gateway_requests_admitted_total", "lab_gateway_requests_shed_total", "lab_gateway_requests_timed_out_total",
    "lab_gateway_requests_total", "lab_gateway_requests_preempted_total",
    "lab_gateway_requests_reclaimed_total", "lab_gateway_upstream_retries_total", "lab_gateway_replica_ejections_total",
    "lab_gateway_rollbacks_total", "lab_gateway_request_latency_seconds", "lab_gateway_time_to_first_byte_seconds",
    "lab_gateway_queue_wait_seconds", "lab_gateway_queue_length", "lab_gateway_inflight_requests",
    "lab_gateway_replica_healthy", "lab_gateway_replica_outstanding_requests", "lab_gateway_version_weight_percent",
)


class _StateCollector(Collector):
    def __init__(self, traffic: Traffic, queue: PriorityAdmission, tiers: list[str]) -> None:
        self.traffic, self.queue, self.tiers = traffic, queue, tiers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("lab_gateway_queue_length", "Requests waiting for a slot, per tier", labels=["tier"])
        inflight = GaugeMetricFamily("lab_gateway_inflight_requests", "Requests holding a slot, per tier", labels=["tier"])
        for tier in self.tiers:
            queued.add_metric([tier], self.queue.waiting(tier))
            inflight.add_metric([tier], self.queue.inflight(tier))
        healthy = GaugeMetricFamily("lab_gateway_replica_healthy", "1 when the replica passes its probes, 0 when ejected",
                                    labels=["replica", "version"])
        outstanding = GaugeMetricFamily("lab_gateway_replica_outstanding_requests", "Requests in flight per replica",
                                        labels=["replica", "version"])
        for replica in self.traffic.replicas.values():
            healthy.add_metric([replica.name, replica.version], 1.0 if replica.healthy else 0.0)
            outstanding.add_metric([replica.name, replica.version], replica.outstanding_requests)
        weights = GaugeMetricFamily("lab_gateway_version_weight_percent", "Share of new requests per model version",
                                    labels=["version"])
        for version in self.traffic.versions():
            weights.add_metric([version], self.traffic.weights.get(version, 0.0))
        yield from (queued, inflight, healthy, outstanding, weights)


@dataclass(frozen=True)
class TierSeries:
    """One tier's children of the per-tier families, resolved once: `labels()` costs a lock and a lookup."""

    admitted: Any
    timed_out: Any
    preempted: Any
    reclaimed: Any
    latency: Any
    ttfb: Any
    queue_wait: Any


class GatewayMetrics:
    def __init__(self, traffic: Traffic, queue: PriorityAdmission, tiers: list[str]) -> None:
        versions = traffic.versions()
        self.registry = registry = CollectorRegistry()
        self.admitted = Counter("lab_gateway_requests_admitted", "Requests that passed the buckets and got a slot",
                                ["tier"], registry=registry)
        self.shed = Counter("lab_gateway_requests_shed", "Requests refused with 429 by a token bucket",
                            ["tier", "bucket"], registry=registry)
        self.timed_out = Counter("lab_gateway_requests_timed_out", "Requests whose tier deadline passed in the queue",
                                 ["tier"], registry=registry)
        self.requests = Counter("lab_gateway_requests", "Forwarded requests by outcome: ok, error, client_error, "
                                "client_closed, preempted", ["tier", "version", "outcome"], registry=registry)
        self.preempted = Counter("lab_gateway_requests_preempted", "Running requests cancelled to free a slot "
                                 "for a higher tier", ["tier"], registry=registry)
        self.reclaimed = Counter("lab_gateway_requests_reclaimed", "Preempted requests that ran on a borrowed slot "
                                 "(above their tier's share), given back to a higher tier", ["tier"], registry=registry)
        self.retries = Counter("lab_gateway_upstream_retries", "Attempts that failed before the first byte and moved on",
                               ["replica"], registry=registry)
        self.ejections = Counter("lab_gateway_replica_ejections", "Replicas ejected after consecutive failed probes",
                                 ["replica", "version"], registry=registry)
        self.rollbacks = Counter("lab_gateway_rollbacks", "Automatic rollbacks and canary aborts", registry=registry)
        self.latency = Histogram("lab_gateway_request_latency_seconds", "Arrival to last byte, admitted requests",
                                 ["tier"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.ttfb = Histogram("lab_gateway_time_to_first_byte_seconds", "Arrival to the first byte from a replica",
                              ["tier"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.queue_wait = Histogram("lab_gateway_queue_wait_seconds", "Time spent waiting for a slot",
                                    ["tier"], buckets=LATENCY_BUCKETS_S, registry=registry)
        registry.register(_StateCollector(traffic, queue, tiers))
        per_tier = (self.admitted, self.timed_out, self.preempted, self.reclaimed, self.latency, self.ttfb,
                    self.queue_wait)  # TierSeries' fields, in order
        self.tier = {t: TierSeries(*(family.labels(t) for family in per_tier)) for t in tiers}
        self._outcomes: dict[tuple[str, str, str], Any] = {}
        # Series exist from the start (at 0), so rate() and the alert rules see them before the first event.
        for tier in tiers:
            for family in per_tier:
                family.labels(tier)
            for bucket in SHED_BUCKETS:
                self.shed.labels(tier, bucket)
            for version in versions:
                for outcome in OUTCOMES:
                    self.requests.labels(tier, version, outcome)

    def count_request(self, tier: str, version: str, outcome: str) -> None:
        child = self._outcomes.get((tier, version, outcome))
        if child is None:
            child = self._outcomes[(tier, version, outcome)] = self.requests.labels(tier, version, outcome)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
