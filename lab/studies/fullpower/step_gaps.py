"""The longest gap between two engine steps during one sweep point, read from the replica's /metrics.

Contract: `scrape_step_gaps(url)` reads `lab:engine_step_gap_seconds` (histogram) and
`lab:engine_step_gap_max_seconds` (longest since start) from `<url>/metrics` (`lab.server.metrics`; only our
engine exports them) into a `StepGapScrape`, or None when the server does not export them (transformers'
engines, another server). `longest_gap(before, after)` is the point's `LongestStepGap` from scrapes taken
before and after it:
- the gauge grew during the point: the new maximum happened in it, exactly (`is_upper_bound` False);
- it did not: the point's longest gap is at most the old maximum and at most the upper edge of the highest
  bucket that gained gaps during the point, the smaller of the two (`is_upper_bound` True);
- no gap during the point (or a scrape missing): `longest_s` NaN.
`StepGapProbe(url)` wraps a point's runner (`probe.run(run_point)`): it scrapes around every point and keeps
each result's `LongestStepGap` (`probe.gap_of(result)`; NOT_AVAILABLE when the server exports none).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lab.bench.runner import BenchConfig, BenchResult

HISTOGRAM = "lab:engine_step_gap_seconds"
MAX_GAUGE = "lab:engine_step_gap_max_seconds"


@dataclass(frozen=True)
class StepGapScrape:
    buckets: tuple[tuple[float, float], ...]  # (upper bound s, cumulative count), ascending, +Inf last
    count: float
    max_s: float


@dataclass(frozen=True)
class LongestStepGap:
    longest_s: float  # NaN: not measured (the server exports no step gaps, or no gap in the point)
    is_upper_bound: bool = False  # True: the point's longest gap is at most `longest_s`
    num_gaps: int = 0  # gaps observed during the point


NOT_AVAILABLE = LongestStepGap(math.nan)


def parse_step_gaps(text: str) -> StepGapScrape | None:
    """The step-gap series of one /metrics text (summed over `model_name`: one per replica), or None."""
    buckets: dict[float, float] = {}
    count, max_s, seen = 0.0, 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{HISTOGRAM}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
                seen = True
            elif sample.name == f"{HISTOGRAM}_count":
                count += sample.value
            elif sample.name == MAX_GAUGE:
                max_s = max(max_s, sample.value)
    return StepGapScrape(tuple(sorted(buckets.items())), count, max_s) if seen else None


def scrape_step_gaps(url: str, timeout_s: float = 10.0) -> StepGapScrape | None:
    response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse_step_gaps(response.text)


def longest_gap(before: StepGapScrape | None, after: StepGapScrape | None) -> LongestStepGap:
    """See the module docstring."""
    if before is None or after is None:
        return NOT_AVAILABLE
    num_gaps = int(round(after.count - before.count))
    if num_gaps <= 0:
        return LongestStepGap(math.nan, num_gaps=0)
    if after.max_s > before.max_s:
        return LongestStepGap(after.max_s, False, num_gaps)
    earlier = dict(before.buckets)
    # The first bound whose cumulative count grew by every gap of the point: none of them lies above it.
    bound = next(le for le, cumulative in after.buckets if cumulative - earlier.get(le, 0.0) >= num_gaps)
    return LongestStepGap(min(bound, before.max_s), True, num_gaps)


class StepGapProbe:
    def __init__(self, url: str) -> None:
        self.url = url
        self._gaps: dict[int, tuple[BenchResult, LongestStepGap]] = {}

    def run(self, run_point: Callable[[BenchConfig], BenchResult]) -> Callable[[BenchConfig], BenchResult]:
        def probed(config: BenchConfig) -> BenchResult:
            before = scrape_step_gaps(self.url)
            result = run_point(config)
            after = scrape_step_gaps(self.url) if before is not None else None
            self._gaps[id(result)] = (result, longest_gap(before, after))  # the result kept: its id stays its own
            return result
        return probed

    def gap_of(self, result: BenchResult) -> LongestStepGap:
        return self._gaps.get(id(result), (None, NOT_AVAILABLE))[1]
