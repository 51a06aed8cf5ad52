"""Hand-made per-request results and benchmark results for the metric and sweep tests."""

from __future__ import annotations

from lab.bench.arrivals import PoissonArrivals
from lab.bench.client import RequestResult
from lab.bench.metrics import compute_metrics, metrics_by_tier
from lab.bench.runner import BenchConfig, BenchResult


def ok(index: int, ttft_s: float, e2e_s: float, output_tokens: int, itl_s: tuple[float, ...] = (),
       input_tokens: int = 10, tier: str = "default") -> RequestResult:
    return RequestResult(index=index, tier=tier, input_tokens=input_tokens, max_tokens=output_tokens,
                         scheduled_s=0.0, sent_s=0.0, success=True, ttft_s=ttft_s, e2e_s=e2e_s, itl_s=itl_s,
                         output_tokens=output_tokens, output_tokens_from_usage=True, http_status=200)


def failed(index: int, kind: str, input_tokens: int = 10, tier: str = "default") -> RequestResult:
    return RequestResult(index=index, tier=tier, input_tokens=input_tokens, max_tokens=4, scheduled_s=0.0,
                         sent_s=0.0, success=False, error_kind=kind)


def bench_result(rate_per_s: float, ttfts_s: list[float], num_failed: int = 0, partial: bool = False,
                 duration_s: float = 10.0) -> BenchResult:
    results = [ok(i, t, t + 0.1, 2) for i, t in enumerate(ttfts_s)]
    results += [failed(len(results) + i, "timeout") for i in range(num_failed)]
    config = BenchConfig(arrivals=PoissonArrivals(rate_per_s))
    return BenchResult(config=config, model="m", results=tuple(results),
                       metrics=compute_metrics(results, duration_s), tier_metrics=metrics_by_tier(results, duration_s),
                       telemetry=None, partial=partial, num_planned=len(results))
