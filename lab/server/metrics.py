"""`/metrics`: Prometheus text with vLLM's metric names, so existing dashboards work unchanged.

Contract: one `ServerMetrics` per app, on its own `CollectorRegistry` (several apps may live in
one process, e.g. in tests). Every series has the label `model_name`. Exported:
- gauges, read from `ServingBackend.stats()` at scrape time (0 while the model loads):
  `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` (0..1);
- where the engine measures it (`BackendStats.step_gaps`: our engine, not transformers'), read at scrape time too:
  `lab:engine_step_gap_seconds`, a histogram of the time from the end of one engine step to the end of the
  next while requests were in flight (`lab.engine.step_gaps`: how long no token came out), and
  `lab:engine_step_gap_max_seconds`, the longest such gap since the engine started (vLLM has neither; the
  `lab:` prefix says so);
- histograms, seconds: `vllm:time_to_first_token_seconds` (request received -> first token
  delivered), `vllm:inter_token_latency_seconds` (gap between consecutive token deliveries to the
  HTTP layer: real delivery times, one observation per token after the first; a delivery of k
  tokens coalesced from k steps counts as k gaps of 1/k of its wait, tokens that came with the
  first one as gaps of 0, so count and sum stay exact), `vllm:e2e_request_latency_seconds`
  (received -> end, whatever the reason), `vllm:request_queue_time_seconds` (engine arrival -> first scheduled);
- counters: `vllm:prompt_tokens_total` (at the first token: the prefill is done),
  `vllm:generation_tokens_total` (as tokens are delivered), `vllm:num_preemptions_total`,
  `vllm:request_success_total{finished_reason}` with the engine's reason (stop, length, deadline,
  abort; a client that disconnects counts as abort), once per admitted request.
- `lab:partition_info{partition}` (`PartitionInfo`, registered by the app): "emulated <profile>" or "MIG <profile>".
A `RequestRecorder` follows one request; `close()` is idempotent and safe in `finally` blocks.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from lab.engine.step_gaps import STEP_GAP_BUCKETS_S
from lab.server.backend import BackendStats, Delta

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's buckets, so histograms line up with a vLLM replica's on the same dashboard.
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                     120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class _StatsGauges:
    """A collector that reads the backend's gauges when Prometheus scrapes."""

    def __init__(self, model_name: str, read_stats: Callable[[], BackendStats | None]) -> None:
        self._model_name = model_name
        self._read_stats = read_stats

    def collect(self):
        stats = self._read_stats() or BackendStats(0, 0, 0.0)
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in the running batch.", stats.num_requests_running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be scheduled.", stats.num_requests_waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", stats.kv_cache_usage),
        ):
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric([self._model_name], float(value))
            yield family
        if stats.step_gaps is not None:
            yield from self._step_gaps(stats.step_gaps)

    def _step_gaps(self, gaps):
        histogram = HistogramMetricFamily(
            "lab:engine_step_gap_seconds", "End of one engine step to the end of the next, requests in flight.",
            labels=["model_name"])
        buckets = [(_le(bound), count) for bound, count in zip(STEP_GAP_BUCKETS_S, gaps.bucket_counts)]
        histogram.add_metric([self._model_name], [*buckets, ("+Inf", gaps.count)], gaps.sum_s)
        yield histogram
        longest = GaugeMetricFamily("lab:engine_step_gap_max_seconds",
                                    "Longest gap between two engine steps with requests in flight, since start.",
                                    labels=["model_name"])
        longest.add_metric([self._model_name], gaps.max_s)
        yield longest


def _le(bound: float) -> str:
    return repr(float(bound))  # Prometheus' own rendering of a bucket bound: 0.001, 1.0


class PartitionInfo:
    """`lab:partition_info{model_name, partition} 1` while the replica serves a GPU partition ("emulated 1g.10gb",
    "MIG 1g.10gb"; `lab.gpu.mig_emulation.partition_label`); no series on a whole device."""

    def __init__(self, model_name: str, read_label: Callable[[], str | None]) -> None:
        self._model_name = model_name
        self._read_label = read_label

    def collect(self):
        label = self._read_label()
        if label:
            family = GaugeMetricFamily("lab:partition_info", "The GPU partition this replica serves on.",
                                       labels=["model_name", "partition"])
            family.add_metric([self._model_name, label], 1.0)
            yield family


class ServerMetrics:
    def __init__(self, model_name: str, read_stats: Callable[[], BackendStats | None]) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_name",)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry).labels(model_name)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry).labels(model_name)

        self.ttft = histogram("vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS_S)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Time between delivered tokens.", ITL_BUCKETS_S)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", REQUEST_BUCKETS_S)
        self.queue = histogram("vllm:request_queue_time_seconds", "Time waiting before first scheduled.",
                               REQUEST_BUCKETS_S)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefilled prompt tokens.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generated tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions.")
        self._success = Counter("vllm:request_success", "Finished requests, by finish reason.",
                                ("model_name", "finished_reason"), registry=self.registry)
        self._model_name = model_name
        self.registry.register(_StatsGauges(model_name, read_stats))

    def start_request(self, num_prompt_tokens: int) -> RequestRecorder:
        return RequestRecorder(self, num_prompt_tokens)

    def count_finished(self, reason: str) -> None:
        self._success.labels(self._model_name, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestRecorder:
    def __init__(self, metrics: ServerMetrics, num_prompt_tokens: int) -> None:
        self._m = metrics
        self._num_prompt_tokens = num_prompt_tokens
        self._received = time.monotonic()
        self._last_token: float | None = None
        self._preemptions = 0
        self._queue_observed = False
        self._closed = False

    def on_delta(self, delta: Delta) -> None:
        now = time.monotonic()
        if delta.token_ids:
            num_tokens = len(delta.token_ids)
            if self._last_token is None:
                self._m.ttft.observe(now - self._received)
                self._m.prompt_tokens.inc(self._num_prompt_tokens)
                gap_s, num_gaps = 0.0, num_tokens - 1
            else:
                gap_s, num_gaps = (now - self._last_token) / num_tokens, num_tokens
            for _ in range(num_gaps):
                self._m.itl.observe(gap_s)
            self._last_token = now
            self._m.generation_tokens.inc(len(delta.token_ids))
        if delta.num_preemptions > self._preemptions:
            self._m.preemptions.inc(delta.num_preemptions - self._preemptions)
            self._preemptions = delta.num_preemptions
        if delta.queue_time_s is not None and not self._queue_observed:
            self._m.queue.observe(delta.queue_time_s)
            self._queue_observed = True
        if delta.finish_reason is not None:
            self.close(delta.finish_reason)

    def discard(self) -> None:
        """The backend refused the request: it never ran, so nothing is recorded."""
        self._closed = True

    def close(self, reason: str = "abort") -> None:
        """End of the request; the reason is the engine's ("abort" when the client left)."""
        if self._closed:
            return
        self._closed = True
        self._m.e2e.observe(time.monotonic() - self._received)
        self._m.count_finished(reason)
