"""The article's headline table, measured: baseline ("native deployment") against full power.

Contract: an `EngineRun` holds what one engine's replica measured: its rate sweep (`load`,
ascending offered rates, `lab.bench.load_sweep.sweep_load`) and its concurrency sweep (`knee`,
`sweep_knee`). `headline_metrics(baseline, fullpower, ttft_p99_slo_s, knee_concurrency)` returns
flat metrics whose names `lab.report.claims` reads (NaN where a value could not be measured):
- `baseline_max_qps`, `fullpower_max_qps`: achieved request throughput at the highest offered
  rate whose P99 TTFT met the SLO with no failed request (`find_max_qps`); `*_max_qps_offered_per_s`
  that rate; `qps_ratio` = full power / baseline (the article: 480 -> 2100, 4.4x).
- At the baseline's maximum load (its max-QPS offered rate, which both sweeps share):
  `baseline_p99_e2e_ms`, `fullpower_p99_e2e_ms` and `p99_e2e_ratio` = baseline / full power (how
  many times lower full power's P99 is; the article: 3.2 s -> 480 ms, 6.7x).
- `fullpower_gpu_util_pct` (at full power's max-QPS point) and `baseline_gpu_util_pct` (at the
  baseline's): mean NVML utilisation sampled during that point; absent without a GPU.
- The knee, per engine (`baseline_*`, `fullpower_*`): `knee_latency_increase_pct`, the mean E2E of
  completed requests at the first cap above `knee_concurrency` over that at the lowest cap, minus
  one, in %; `knee_error_rate_pct`, the failed share there (timeouts included). The baseline's
  pair is also recorded as `native_latency_increase_pct` / `native_error_rate_pct` (the article:
  above 128 concurrent requests, +370 % latency and 12 % errors).
`headline_markdown(metrics)` renders the table with the article's targets beside the measurements.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.bench.runner import BenchResult
from lab.bench.sweep import find_max_qps

NAN = math.nan
TARGET_QPS_RATIO = 4.4  # 480 -> 2100 QPS
TARGET_P99_E2E_RATIO = 6.7  # 3.2 s -> 480 ms
TARGET_GPU_UTIL_PCT = 89.0


@dataclass(frozen=True)
class EngineRun:
    name: str  # "baseline" or "fullpower": the prefix of its metrics
    load: tuple[BenchResult, ...]  # the rate sweep, ascending offered rates
    knee: tuple[BenchResult, ...] = ()  # the concurrency sweep, ascending caps
    ready_after_s: float = NAN  # replica start to ready


def _point_at_rate(results: Sequence[BenchResult], rate_per_s: float) -> BenchResult | None:
    return next((r for r in results if math.isclose(r.request_rate_per_s, rate_per_s)), None)


def _gpu_util_pct(result: BenchResult | None) -> float | None:
    if result is None or result.telemetry is None:
        return None
    return result.telemetry.summary().get("gpu_util_mean_pct")


def failed_pct(result: BenchResult) -> float:
    finished = result.metrics.completed + result.metrics.failed
    return 100.0 * result.metrics.failed / finished if finished else NAN


def knee_metrics(knee: Sequence[BenchResult], knee_concurrency: int) -> dict[str, float]:
    """Latency increase and error rate at the first cap above the knee, against the lowest cap."""
    points = sorted((r for r in knee if r.config.max_concurrency), key=lambda r: r.config.max_concurrency)
    above = next((r for r in points if r.config.max_concurrency > knee_concurrency), None)
    if not points or above is None:
        return {"knee_latency_increase_pct": NAN, "knee_error_rate_pct": NAN}
    base_s, loaded_s = points[0].metrics.e2e.mean_s, above.metrics.e2e.mean_s
    increase = 100.0 * (loaded_s / base_s - 1.0) if base_s > 0 and not math.isnan(loaded_s) else NAN
    return {"knee_latency_increase_pct": increase, "knee_error_rate_pct": failed_pct(above),
            "knee_concurrency_above": float(above.config.max_concurrency)}


def headline_metrics(baseline: EngineRun, fullpower: EngineRun, *, ttft_p99_slo_s: float,
                     knee_concurrency: int) -> dict[str, float]:
    """See the module docstring."""
    metrics: dict[str, float] = {"ttft_p99_slo_ms": ttft_p99_slo_s * 1e3}
    best = {}
    for run in (baseline, fullpower):
        found = find_max_qps(run.load, ttft_p99_slo_s)
        best[run.name] = found
        metrics[f"{run.name}_max_qps"] = found.achieved_request_throughput_per_s if found else NAN
        metrics[f"{run.name}_max_qps_offered_per_s"] = found.request_rate_per_s if found else NAN
        metrics[f"{run.name}_ready_after_s"] = run.ready_after_s
        util = _gpu_util_pct(_point_at_rate(run.load, found.request_rate_per_s)) if found else None
        if util is not None:
            metrics[f"{run.name}_gpu_util_pct"] = util
        for key, value in knee_metrics(run.knee, knee_concurrency).items():
            metrics[f"{run.name}_{key}"] = value
    metrics["qps_ratio"] = _ratio(metrics["fullpower_max_qps"], metrics["baseline_max_qps"])
    base_best = best[baseline.name]
    at_base = [_point_at_rate(run.load, base_best.request_rate_per_s) if base_best else None
               for run in (baseline, fullpower)]
    for run, point in zip((baseline, fullpower), at_base):
        metrics[f"{run.name}_p99_e2e_ms"] = point.metrics.e2e.p99_s * 1e3 if point else NAN
    metrics["p99_e2e_ratio"] = _ratio(metrics["baseline_p99_e2e_ms"], metrics["fullpower_p99_e2e_ms"])
    metrics["native_latency_increase_pct"] = metrics["baseline_knee_latency_increase_pct"]
    metrics["native_error_rate_pct"] = metrics["baseline_knee_error_rate_pct"]
    return metrics


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return NAN
    return numerator / denominator


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.3g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"


def headline_markdown(metrics: dict[str, float]) -> str:
    """The headline table as markdown: baseline, full power, ratio, and the article's target."""
    m = metrics.get
    rows = [
        ("max QPS at P99 TTFT <= SLO [req/s]", m("baseline_max_qps"), m("fullpower_max_qps"),
         _fmt(m("qps_ratio"), "x"), f">= {TARGET_QPS_RATIO}x"),
        ("P99 E2E at the baseline's max load [ms]", m("baseline_p99_e2e_ms"), m("fullpower_p99_e2e_ms"),
         _fmt(m("p99_e2e_ratio"), "x lower"), f">= {TARGET_P99_E2E_RATIO}x lower"),
        ("GPU utilisation at own max load [%]", m("baseline_gpu_util_pct"), m("fullpower_gpu_util_pct"),
         "", f">= {TARGET_GPU_UTIL_PCT:g} % (full power)"),
        ("knee: mean E2E increase above the knee [%]", m("baseline_knee_latency_increase_pct"),
         m("fullpower_knee_latency_increase_pct"), "", "+370 % (native)"),
        ("knee: error rate above the knee [%]", m("baseline_knee_error_rate_pct"),
         m("fullpower_knee_error_rate_pct"), "", "12 % (native)"),
    ]
    lines = ["| metric | baseline (hf generate) | full power (lab engine) | ratio | article |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(b)} | {_fmt(f)} | {ratio} | {target} |" for name, b, f, ratio, target in rows]
    return "\n".join(lines)
