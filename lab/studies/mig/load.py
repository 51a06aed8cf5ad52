"""The mixed workload, the same on every slice at once: short interactive chat requests and long batch ones.

Contract: `Workload` names both classes (tiers "realtime" and "batch", as `lab.tiers` calls them): chat requests
arrive as a Poisson stream of `chat_rate_per_s` for `duration_s` seconds; batch requests are long prompts with long
outputs, `batch_concurrency` in flight at a time, enough to last the same window. `run_on(urls, plan)` sends, for
each slice URL, the classes `plan` gives it (a `SliceLoad`), all slices at once (one `lab.bench` run per class and
slice, each in its own thread), and returns one `SliceRun` per URL with each class's `BenchResult`. The isolation
test reuses it: the victims get chat only, the aggressor `overload_factor` times the batch concurrency.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lab.bench.arrivals import PoissonArrivals
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.workloads import RandomWorkload
from lab.errors import LabError

CHAT, BATCH = "realtime", "batch"  # lab.tiers' names for interactive and offline work


@dataclass(frozen=True)
class Workload:
    duration_s: float = 10.0  # seconds of chat arrivals; batch requests are sized to last about as long
    chat_rate_per_s: float = 2.0  # Poisson arrivals of short requests, per slice
    chat_input_tokens: int = 32
    chat_output_tokens: int = 16
    batch_input_tokens: int = 256
    batch_output_tokens: int = 64
    batch_concurrency: int = 2  # long requests in flight per slice
    batch_requests: int = 4  # long requests per slice
    overload_factor: int = 4  # the isolation test's aggressor: this many times the batch concurrency and count
    request_timeout_s: float = 300.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.chat_rate_per_s <= 0:
            raise LabError("Workload: duration_s and chat_rate_per_s must be > 0")
        if min(self.batch_concurrency, self.batch_requests, self.overload_factor) < 1:
            raise LabError("Workload: batch_concurrency, batch_requests and overload_factor must be >= 1")

    def config(self, url: str, tier: str, overload: bool = False) -> BenchConfig:
        if tier == CHAT:
            n = max(1, math.ceil(self.chat_rate_per_s * self.duration_s))
            return BenchConfig(base_url=url, workload=RandomWorkload(n, self.chat_input_tokens, self.chat_output_tokens),
                               arrivals=PoissonArrivals(self.chat_rate_per_s), seed=self.seed, num_warmups=0,
                               request_timeout_s=self.request_timeout_s, show_progress=False)
        factor = self.overload_factor if overload else 1
        return BenchConfig(base_url=url, workload=RandomWorkload(self.batch_requests * factor, self.batch_input_tokens,
                                                                 self.batch_output_tokens),
                           max_concurrency=self.batch_concurrency * factor, seed=self.seed + 1, num_warmups=0,
                           request_timeout_s=self.request_timeout_s, show_progress=False)


@dataclass(frozen=True)
class SliceLoad:
    tiers: tuple[str, ...] = (CHAT, BATCH)
    overload: bool = False  # batch at overload_factor times


@dataclass(frozen=True)
class SliceRun:
    url: str
    by_tier: Mapping[str, BenchResult]


def run_on(workload: Workload, plan: Mapping[str, SliceLoad]) -> dict[str, SliceRun]:
    """Every (url, tier) benchmark at once; a slice with no tiers is left idle."""
    jobs = [(url, tier, workload.config(url, tier, load.overload)) for url, load in plan.items() for tier in load.tiers]
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: run_benchmark(job[2]), jobs))
    runs: dict[str, dict[str, BenchResult]] = {url: {} for url in plan}
    for (url, tier, _), result in zip(jobs, results):
        runs[url][tier] = result
    return {url: SliceRun(url, by_tier) for url, by_tier in runs.items()}


def pooled(results: Sequence[BenchResult]) -> list:
    """Every request result of several runs, for a P99 over them."""
    return [r for result in results for r in result.results]
