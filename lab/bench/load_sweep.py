"""Sweeps sized for comparing two servers: points of bounded length that stop at saturation.

`sweep_rates` runs the same number of requests at every rate, so a low rate takes long and a
rate far past a slow server's capacity queues requests for minutes. For a baseline-vs-full-power
comparison (notebook 03) both are bounded here:
- `sweep_load(config, rates_per_s, point_duration_s=..., ttft_p99_slo_s=...)`: ascending rates;
  each point sends `rate * point_duration_s` requests (clamped to [min_requests, max_requests]),
  Poisson unless the config names another process; after `misses_before_stop` consecutive points
  that miss the SLO (`find_max_qps` of that point alone is None: P99 TTFT above it, or failures)
  the server is saturated and higher rates are skipped. Requests that wait longer than
  `config.request_timeout_s` fail as timeouts, so an overloaded point ends in bounded time.
- `sweep_knee(config, max_concurrencies, requests_per_slot=...)`: every request at once (rate
  inf) under each `max_concurrency` cap, `cap * requests_per_slot` requests per point (at least
  `min_requests`), for latency and errors against requests in flight (the article's knee).
Both use one seed (the same prompts at every point) and return the `BenchResult`s in run order;
a Ctrl-C ends the sweep after the point it interrupted (marked partial).
"""
from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence

from lab.bench.arrivals import PoissonArrivals
from lab.bench.prompts import PromptBuilder
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.sweep import find_max_qps, with_rate
from lab.bench.workloads import RandomWorkload
from lab.errors import LabError


def _sized(config: BenchConfig, num_requests: int) -> BenchConfig:
    if not isinstance(config.workload, RandomWorkload):
        raise LabError("sized sweeps need a RandomWorkload (fixed lengths); a trace brings its own request count")
    return dataclasses.replace(config, workload=dataclasses.replace(config.workload, num_requests=num_requests))


def requests_for_rate(rate_per_s: float, point_duration_s: float, min_requests: int, max_requests: int | None) -> int:
    """How many requests make a point of about `point_duration_s` at `rate_per_s`."""
    wanted = math.ceil(rate_per_s * point_duration_s)
    return max(min_requests, wanted if max_requests is None else min(wanted, max_requests))


def sweep_load(config: BenchConfig, rates_per_s: Sequence[float], *, point_duration_s: float, ttft_p99_slo_s: float,
               min_requests: int = 8, max_requests: int | None = None, misses_before_stop: int = 2,
               prompts: PromptBuilder | None = None, stop: threading.Event | None = None) -> tuple[BenchResult, ...]:
    """See the module docstring."""
    if point_duration_s <= 0 or min_requests < 1 or misses_before_stop < 1:
        raise LabError("point_duration_s must be > 0, min_requests and misses_before_stop >= 1")
    if config.arrivals is None:
        config = dataclasses.replace(config, arrivals=PoissonArrivals(1.0))  # the rate is set per point
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    results: list[BenchResult] = []
    misses = 0
    for rate in sorted(rates_per_s):
        point = _sized(with_rate(config, rate), requests_for_rate(rate, point_duration_s, min_requests, max_requests))
        result = run_benchmark(point, prompts=builder, stop=stop)
        results.append(result)
        if result.partial:
            break
        misses = misses + 1 if find_max_qps([result], ttft_p99_slo_s) is None else 0
        if misses >= misses_before_stop:
            break
    return tuple(results)


def sweep_knee(config: BenchConfig, max_concurrencies: Sequence[int], *, requests_per_slot: float = 2.0,
               min_requests: int = 8, prompts: PromptBuilder | None = None,
               stop: threading.Event | None = None) -> tuple[BenchResult, ...]:
    """See the module docstring."""
    if requests_per_slot <= 0:
        raise LabError(f"requests_per_slot must be > 0, got {requests_per_slot}")
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    at_once = dataclasses.replace(config, arrivals=PoissonArrivals(math.inf))
    results = []
    for cap in sorted(max_concurrencies):
        point = dataclasses.replace(_sized(at_once, max(min_requests, math.ceil(cap * requests_per_slot))),
                                    max_concurrency=cap)
        result = run_benchmark(point, prompts=builder, stop=stop)
        results.append(result)
        if result.partial:
            break
    return tuple(results)
