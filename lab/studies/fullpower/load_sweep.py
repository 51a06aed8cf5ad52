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
  With `floor_rate_per_s`, a server that met the SLO at none of the given rates is probed lower:
  the rate halves from the lowest one given (a last point at the floor itself if halving would
  skip below it) until a point passes or the floor has been run, so a slow baseline still gets a
  measured maximum, or a measured bound (`lab.studies.fullpower.headline` records it as an upper bound).
  Results come back in ascending rate order. P99 over n requests interpolates between the two
  largest of them when n < 100, so a point of fewer than ~20 requests reports about its maximum:
  size points with `min_requests` (a low rate takes `min_requests / rate` seconds).
- `sweep_knee(config, max_concurrencies, requests_per_slot=...)`: every request at once (rate
  inf) under each `max_concurrency` cap, `cap * requests_per_slot` requests per point (at least
  `min_requests`), for latency and errors against requests in flight (the article's knee).
Both take a random or chat workload (its `num_requests` is set per point), use one seed (the
same prompts at every point) and return the `BenchResult`s by ascending rate or cap; a Ctrl-C
ends the sweep after the point it interrupted (marked partial). `wrap` (optional) wraps the function
that runs one point, e.g. to read the server's /metrics around it (`lab.studies.fullpower.step_gaps`).
"""
from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence

from lab.bench.arrivals import PoissonArrivals
from lab.bench.prompts import PromptBuilder
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.sweep import find_max_qps, with_rate
from lab.bench.workloads import ChatWorkload, RandomWorkload
from lab.errors import LabError


PointWrapper = Callable[[Callable[[BenchConfig], BenchResult]], Callable[[BenchConfig], BenchResult]]


def _runner(builder: PromptBuilder, stop: threading.Event,
            wrap: PointWrapper | None) -> Callable[[BenchConfig], BenchResult]:
    def run(point: BenchConfig) -> BenchResult:
        return run_benchmark(point, prompts=builder, stop=stop)  # looked up per call: tests replace it
    return wrap(run) if wrap is not None else run


def _sized(config: BenchConfig, num_requests: int) -> BenchConfig:
    if not isinstance(config.workload, (RandomWorkload, ChatWorkload)):
        raise LabError("sized sweeps need a random or chat workload; a trace brings its own request count")
    return dataclasses.replace(config, workload=dataclasses.replace(config.workload, num_requests=num_requests))


def requests_for_rate(rate_per_s: float, point_duration_s: float, min_requests: int, max_requests: int | None) -> int:
    """How many requests make a point of about `point_duration_s` at `rate_per_s`."""
    wanted = math.ceil(rate_per_s * point_duration_s)
    return max(min_requests, wanted if max_requests is None else min(wanted, max_requests))


def sweep_load(config: BenchConfig, rates_per_s: Sequence[float], *, point_duration_s: float, ttft_p99_slo_s: float,
               min_requests: int = 8, max_requests: int | None = None, misses_before_stop: int = 2,
               floor_rate_per_s: float | None = None, prompts: PromptBuilder | None = None,
               stop: threading.Event | None = None, wrap: PointWrapper | None = None) -> tuple[BenchResult, ...]:
    """See the module docstring."""
    if point_duration_s <= 0 or min_requests < 1 or misses_before_stop < 1:
        raise LabError("point_duration_s must be > 0, min_requests and misses_before_stop >= 1")
    if not rates_per_s:
        raise LabError("sweep_load needs at least one rate")
    if floor_rate_per_s is not None and not 0 < floor_rate_per_s <= min(rates_per_s):
        raise LabError(f"floor_rate_per_s must be in (0, lowest rate {min(rates_per_s):g}], got {floor_rate_per_s}")
    if config.arrivals is None:
        config = dataclasses.replace(config, arrivals=PoissonArrivals(1.0))  # the rate is set per point
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    results: list[BenchResult] = []
    run = _runner(builder, stop, wrap)

    def run_point(rate: float) -> BenchResult:
        point = _sized(with_rate(config, rate), requests_for_rate(rate, point_duration_s, min_requests, max_requests))
        result = run(point)
        results.append(result)
        return result

    misses = 0
    for rate in sorted(rates_per_s):
        result = run_point(rate)
        if result.partial:
            return tuple(results)
        misses = misses + 1 if find_max_qps([result], ttft_p99_slo_s) is None else 0
        if misses >= misses_before_stop:
            break
    if floor_rate_per_s is not None and find_max_qps(results, ttft_p99_slo_s) is None:
        for rate in rates_below(min(rates_per_s), floor_rate_per_s):
            result = run_point(rate)
            if result.partial or find_max_qps([result], ttft_p99_slo_s) is not None:
                break
    return tuple(sorted(results, key=lambda r: r.request_rate_per_s))


def rates_below(lowest_per_s: float, floor_per_s: float) -> list[float]:
    """The probe rates under `lowest_per_s`: halving, ending exactly at the floor."""
    rates, rate = [], lowest_per_s / 2
    while rate > floor_per_s and not math.isclose(rate, floor_per_s):
        rates.append(rate)
        rate /= 2
    if not math.isclose(lowest_per_s, floor_per_s):
        rates.append(floor_per_s)
    return rates


def sweep_knee(config: BenchConfig, max_concurrencies: Sequence[int], *, requests_per_slot: float = 2.0,
               min_requests: int = 8, prompts: PromptBuilder | None = None,
               stop: threading.Event | None = None, wrap: PointWrapper | None = None) -> tuple[BenchResult, ...]:
    """See the module docstring."""
    if requests_per_slot <= 0:
        raise LabError(f"requests_per_slot must be > 0, got {requests_per_slot}")
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    at_once = dataclasses.replace(config, arrivals=PoissonArrivals(math.inf))
    run = _runner(builder, stop, wrap)
    results = []
    for cap in sorted(max_concurrencies):
        point = dataclasses.replace(_sized(at_once, max(min_requests, math.ceil(cap * requests_per_slot))),
                                    max_concurrency=cap)
        result = run(point)
        results.append(result)
        if result.partial:
            break
    return tuple(results)
