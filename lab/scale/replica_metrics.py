"""Load signals from live replicas: scrape `/metrics` (vLLM's metric names) and sum them.

Contract: `parse_prometheus(text)` returns {metric name: sum over its series} for the plain
`name{labels} value` lines of Prometheus text (comments and `_bucket`-style histogram series
are kept under their own names). `SignalReader.read(pool)` scrapes every ready replica of a
`Pool` and returns `LoadSignals`: running = sum of `vllm:num_requests_running`, queue = sum of
`vllm:num_requests_waiting`, KV usage = mean of `vllm:kv_cache_usage_perc`, request rate = the
growth of `vllm:request_success_total` (finished requests) per second since the previous read,
a lower bound of the arrival rate until the gateway's own rate is wired in. A replica that does
not answer within `timeout_s` counts as zero load for that read.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from lab.scale.pool import Pool, ReplicaState
from lab.scale.signals import LoadSignals

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
FINISHED = "vllm:request_success_total"


def parse_prometheus(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue  # a timestamp-suffixed or malformed line: not ours to judge
    return totals


class SignalReader:
    def __init__(self, replica_slots: int, timeout_s: float = 1.0) -> None:
        self.replica_slots = replica_slots
        self.timeout_s = timeout_s
        self._last_finished: tuple[float, float] | None = None  # (monotonic time, total finished)

    def _scrape(self, url: str) -> dict[str, float]:
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=self.timeout_s) as response:
                return parse_prometheus(response.read().decode("utf-8", errors="replace"))
        except (urllib.error.URLError, OSError):
            return {}

    def read(self, pool: Pool, time_s: float) -> LoadSignals:
        infos = pool.replicas()
        ready = [i for i in infos if i.state is ReplicaState.READY]
        scraped = [self._scrape(i.url) for i in ready]
        now, finished = time.monotonic(), sum(m.get(FINISHED, 0.0) for m in scraped)
        rate = 0.0
        if self._last_finished is not None and now > self._last_finished[0]:
            rate = max(0.0, finished - self._last_finished[1]) / (now - self._last_finished[0])
        self._last_finished = (now, finished)
        kv = [m.get(KV_USAGE, 0.0) for m in scraped]
        return LoadSignals(
            time_s=time_s, request_rate_per_s=rate,
            queue_length=int(sum(m.get(WAITING, 0.0) for m in scraped)),
            running_requests=int(sum(m.get(RUNNING, 0.0) for m in scraped)),
            kv_cache_usage=sum(kv) / len(kv) if kv else 0.0,
            ready_replicas=len(ready),
            starting_replicas=sum(1 for i in infos if i.state is ReplicaState.STARTING),
            replica_slots=self.replica_slots)
