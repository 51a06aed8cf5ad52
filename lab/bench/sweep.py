"""Request-rate sweeps and the maximum QPS under a latency SLO.

Contract:
- `sweep_rates(config, rates_per_s)` runs `config` once per offered request rate (same seed, so
  the same prompts, lengths and tiers; only the arrival times change) and returns the
  `BenchResult`s in the order given. The config's arrival process keeps its kind and other
  parameters (burstiness, flash-sale window); a random workload without one gets Poisson; a
  trace's own timestamps cannot be swept (pass an arrival process to replay its lengths). A Ctrl-C ends the
  sweep after the point it interrupted, which comes back marked partial.
- `sweep_concurrency(config, max_concurrencies)` does the same over `max_concurrency` caps, for
  the concurrency knee (latency and errors against requests in flight).
- `find_max_qps(results, ttft_p99_slo_s)` -> `MaxQps | None`: among complete (non-partial)
  results whose P99 TTFT <= the SLO and whose failed share <= `max_failed_fraction`, the one with
  the highest offered request rate, ties broken by achieved throughput (so a concurrency sweep at
  rate inf finds its best cap); None when no point meets the SLO. `MaxQps` carries that
  offered rate and the throughput actually achieved there, which is what a table should quote.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from lab.bench.prompts import PromptBuilder
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.workloads import TraceWorkload
from lab.errors import LabError


def with_rate(config: BenchConfig, rate_per_s: float) -> BenchConfig:
    """`config` with its arrival process at another offered rate."""
    if config.arrivals is None and isinstance(config.workload, TraceWorkload):
        raise LabError("a rate sweep of a trace needs an arrival process (poisson, gamma, constant, flash-sale) "
                       "to replay its lengths at each rate; a trace's own timestamps are sped up with its speedup")
    process = config.arrival_process
    if not hasattr(process, "request_rate_per_s"):
        raise LabError(f"a rate sweep needs a synthetic arrival process (poisson, gamma, constant, flash-sale), "
                       f"not {process.describe()['arrival']}")
    return dataclasses.replace(config, arrivals=dataclasses.replace(process, request_rate_per_s=rate_per_s))


def sweep_rates(config: BenchConfig, rates_per_s: Sequence[float], *, prompts: PromptBuilder | None = None,
                stop: threading.Event | None = None) -> tuple[BenchResult, ...]:
    """See the module docstring."""
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    results = []
    for rate in rates_per_s:
        result = run_benchmark(with_rate(config, rate), prompts=builder, stop=stop)
        results.append(result)
        if result.partial:
            break
    return tuple(results)


def sweep_concurrency(config: BenchConfig, max_concurrencies: Sequence[int], *,
                      prompts: PromptBuilder | None = None,
                      stop: threading.Event | None = None) -> tuple[BenchResult, ...]:
    """`config` once per `max_concurrency` cap (the concurrency knee); otherwise as `sweep_rates`."""
    builder = prompts or PromptBuilder.deepseek()
    stop = stop or threading.Event()
    results = []
    for cap in max_concurrencies:
        result = run_benchmark(dataclasses.replace(config, max_concurrency=cap), prompts=builder, stop=stop)
        results.append(result)
        if result.partial:
            break
    return tuple(results)


@dataclass(frozen=True)
class MaxQps:
    request_rate_per_s: float  # the offered rate of the best point meeting the SLO
    achieved_request_throughput_per_s: float
    ttft_p99_s: float
    ttft_p99_slo_s: float
    max_concurrency: int | None = None  # the cap of that point, if any


def _failed_fraction(result: BenchResult) -> float:
    finished = result.metrics.completed + result.metrics.failed
    return result.metrics.failed / finished if finished else 1.0


def find_max_qps(results: Sequence[BenchResult], ttft_p99_slo_s: float, *,
                 max_failed_fraction: float = 0.0) -> MaxQps | None:
    """See the module docstring."""
    passing = [
        r for r in results
        if not r.partial
        and r.metrics.completed > 0
        and r.metrics.ttft.p99_s <= ttft_p99_slo_s  # NaN compares False: no data, no pass
        and _failed_fraction(r) <= max_failed_fraction
        and not math.isnan(r.request_rate_per_s)
    ]
    if not passing:
        return None
    # Ties (every point of a concurrency sweep offers rate inf) go to the higher achieved throughput.
    best = max(passing, key=lambda r: (r.request_rate_per_s, r.metrics.request_throughput_per_s))
    return MaxQps(best.request_rate_per_s, best.metrics.request_throughput_per_s, best.metrics.ttft.p99_s,
                  ttft_p99_slo_s, best.config.max_concurrency)
