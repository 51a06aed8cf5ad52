"""Serving metrics from per-request results, defined exactly as vLLM's `bench serve` defines them.

Contract: `compute_metrics(results, duration_s, slos)` -> `BenchMetrics`.
- Only successful requests enter the latency statistics and throughputs ("completed").
- TTFT, E2E: one value per completed request. TPOT = (E2E - TTFT) / (output tokens - 1), only
  for requests with more than one output token. ITL: every inter-chunk gap of every completed
  request, pooled.
- Each latency gets mean, median, std (population, numpy's default as in vLLM), P90 and P99
  (numpy's linear interpolation); an empty set gives NaN (vLLM prints 0, which hides failure).
- Throughputs divide by the run's `duration_s` (first send to last completion): requests/s,
  output tokens/s, total (prompt + output) tokens/s; prompt tokens are the planned lengths.
- Goodput (vLLM's `--goodput`): completed requests meeting every SLO, per second. SLOs are on
  `ttft`, `tpot` or `e2el` in milliseconds; a request meets one when value <= SLO; a request
  with one output token has TPOT 0 for this purpose, as in vLLM.
- Failures are counted per `error_kind` (`timeout`, `http_503`, ...); `cancelled` (Ctrl-C) is
  counted apart, neither completed nor failed.
`BenchMetrics.flat()` gives record-ready names with units: `ttft_p99_ms`, `output_throughput_tok_per_s`...
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lab.bench.client import RequestResult
from lab.errors import LabError

SLO_METRICS = ("ttft", "tpot", "e2el")  # vLLM's --goodput keys
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Slo:
    metric: str  # ttft | tpot | e2el
    limit_ms: float

    def __post_init__(self) -> None:
        if self.metric not in SLO_METRICS:
            raise LabError(f"unknown SLO metric {self.metric!r}; choose from {', '.join(SLO_METRICS)}")
        if not self.limit_ms > 0:
            raise LabError(f"SLO {self.metric} must be > 0 ms, got {self.limit_ms}")


def parse_slos(items: Iterable[str]) -> tuple[Slo, ...]:
    """`["ttft:500", "tpot:50"]` (milliseconds, vLLM's --goodput syntax) -> Slo tuple."""
    slos = []
    for item in items:
        name, sep, value = item.partition(":")
        try:
            slos.append(Slo(name, float(value)))
        except ValueError:
            raise LabError(f"an SLO is NAME:MILLISECONDS with NAME in {', '.join(SLO_METRICS)}; got {item!r}") from None
        if not sep:
            raise LabError(f"an SLO is NAME:MILLISECONDS, got {item!r}")
    return tuple(slos)


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_s: float
    median_s: float
    std_s: float
    p90_s: float
    p99_s: float

    @classmethod
    def of(cls, values_s: Sequence[float]) -> LatencyStats:
        if not len(values_s):
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan)
        a = np.asarray(values_s, dtype=np.float64)
        return cls(len(a), float(a.mean()), float(np.median(a)), float(a.std()),
                   float(np.percentile(a, 90)), float(np.percentile(a, 99)))

    def flat(self, name: str) -> dict[str, float]:
        return {f"{name}_{stat}_ms": getattr(self, f"{stat}_s") * 1000.0
                for stat in ("mean", "median", "std", "p90", "p99")}


def tpot_s(result: RequestResult) -> float | None:
    if not result.success or result.output_tokens <= 1:
        return None
    return (result.e2e_s - result.ttft_s) / (result.output_tokens - 1)


def meets_slos(result: RequestResult, slos: Sequence[Slo]) -> bool:
    values_s = {"ttft": result.ttft_s, "tpot": tpot_s(result) or 0.0, "e2el": result.e2e_s}
    return result.success and all(values_s[slo.metric] <= slo.limit_ms / 1000.0 for slo in slos)


@dataclass(frozen=True)
class BenchMetrics:
    duration_s: float
    completed: int
    failed: int
    cancelled: int
    errors_by_kind: Mapping[str, int]
    total_input_tokens: int
    total_output_tokens: int
    request_throughput_per_s: float
    output_throughput_tok_per_s: float
    total_throughput_tok_per_s: float
    ttft: LatencyStats
    tpot: LatencyStats
    itl: LatencyStats
    e2e: LatencyStats
    slos: tuple[Slo, ...] = ()
    good_requests: int | None = None  # None: no SLOs given
    goodput_per_s: float | None = None
    timeouts: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors_by_kind", dict(self.errors_by_kind))
        object.__setattr__(self, "timeouts", self.errors_by_kind.get("timeout", 0))

    def flat(self, prefix: str = "") -> dict[str, float]:
        metrics: dict[str, float] = {
            "duration_s": self.duration_s, "completed": self.completed, "failed": self.failed,
            "timeouts": self.timeouts, "cancelled": self.cancelled,
            "total_input_tokens": self.total_input_tokens, "total_output_tokens": self.total_output_tokens,
            "request_throughput_per_s": self.request_throughput_per_s,
            "output_throughput_tok_per_s": self.output_throughput_tok_per_s,
            "total_throughput_tok_per_s": self.total_throughput_tok_per_s,
        }
        for name, stats in (("ttft", self.ttft), ("tpot", self.tpot), ("itl", self.itl), ("e2el", self.e2e)):
            metrics.update(stats.flat(name))
        if self.goodput_per_s is not None:
            metrics["good_requests"] = self.good_requests
            metrics["goodput_per_s"] = self.goodput_per_s
        metrics.update({f"errors_{kind}": count for kind, count in self.errors_by_kind.items()})
        return {prefix + key: float(value) for key, value in metrics.items()}


def compute_metrics(results: Sequence[RequestResult], duration_s: float,
                    slos: Sequence[Slo] = ()) -> BenchMetrics:
    """See the module docstring."""
    done = [r for r in results if r.success]
    failures = Counter(r.error_kind or "unknown" for r in results if not r.success and r.error_kind != CANCELLED)
    cancelled = sum(1 for r in results if r.error_kind == CANCELLED)
    input_tokens = sum(r.input_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: math.nan)
    good = sum(1 for r in done if meets_slos(r, slos)) if slos else None
    return BenchMetrics(
        duration_s=duration_s,
        completed=len(done),
        failed=sum(failures.values()),
        cancelled=cancelled,
        errors_by_kind=dict(sorted(failures.items())),
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        request_throughput_per_s=per_s(len(done)),
        output_throughput_tok_per_s=per_s(output_tokens),
        total_throughput_tok_per_s=per_s(input_tokens + output_tokens),
        ttft=LatencyStats.of([r.ttft_s for r in done]),
        tpot=LatencyStats.of([t for t in map(tpot_s, done) if t is not None]),
        itl=LatencyStats.of([gap for r in done for gap in r.itl_s]),
        e2e=LatencyStats.of([r.e2e_s for r in done]),
        slos=tuple(slos),
        good_requests=good,
        goodput_per_s=None if good is None else per_s(good),
    )


def metrics_by_tier(results: Sequence[RequestResult], duration_s: float,
                    slos: Sequence[Slo] = ()) -> dict[str, BenchMetrics]:
    """One `BenchMetrics` per tier, each over the whole run's duration."""
    tiers = sorted({r.tier for r in results})
    return {tier: compute_metrics([r for r in results if r.tier == tier], duration_s, slos) for tier in tiers}
