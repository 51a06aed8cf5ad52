"""The article's headline table, measured: baseline ("native deployment") against full power.

Contract: an `EngineRun` holds what one engine's replica measured: its rate sweep (`load`,
ascending offered rates, `lab.studies.fullpower.load_sweep.sweep_load`) and its concurrency sweep (`knee`,
`sweep_knee`). `headline_metrics(baseline, fullpower, ttft_p99_slo_s, knee_concurrency)` returns
flat metrics whose names `lab.report.claims` reads (NaN where a value could not be measured):
- `baseline_max_qps`, `fullpower_max_qps`: achieved request throughput at the highest offered
  rate whose P99 TTFT met the SLO with no failed request (`find_max_qps`); `*_max_qps_offered_per_s`
  that rate; `*_max_qps_num_requests` how many requests that point sent (P99 over fewer than ~20
  is about their maximum). Honest bounds instead of numbers from nowhere:
  - an engine that met the SLO at *no* rate (the sweep extended down to its floor): its max QPS
    is below the lowest rate it ran, so `*_max_qps` is that offered rate and
    `*_max_qps_is_upper_bound` is 1.0 (the table shows "< x");
  - an engine that met it at its *highest* rate: it never saturated, so `*_max_qps_is_lower_bound`
    is 1.0 (the table shows ">= x"): the sweep should go higher.
- `qps_ratio` = full power / baseline (the article: 480 -> 2100, 4.4x), with
  `qps_ratio_is_lower_bound` (1.0 when the baseline's max is an upper bound or full power's a lower
  bound: the true ratio is at least this) and `qps_ratio_is_upper_bound` (the reverse); NaN when
  the bounds point both ways or a side has no number.
- At the baseline's maximum load (`headline_load_rate_per_s`: its max-QPS offered rate, or the
  lowest rate it ran when that is an upper bound), where full power was measured too:
  `baseline_p99_e2e_ms`, `fullpower_p99_e2e_ms` and `p99_e2e_ratio` = baseline / full power (how
  many times lower full power's P99 is; the article: 3.2 s -> 480 ms, 6.7x).
- `fullpower_gpu_util_pct` (at full power's max-QPS point) and `baseline_gpu_util_pct` (at the
  baseline's): mean NVML utilisation over the steady part of that point (without ramp-up and
  drain, `lab.bench.utilization`); absent without a GPU.
- The knee, per engine (`baseline_*`, `fullpower_*`): `knee_latency_increase_pct`, the mean E2E of
  completed requests at the first cap above `knee_concurrency` over that at the lowest cap, minus
  one, in %; `knee_error_rate_pct`, the failed share there (timeouts included); and the same pair
  at every cap, `knee_c<cap>_latency_increase_pct` / `knee_c<cap>_error_rate_pct`. The baseline's
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
    if result is None:
        return None
    return result.steady_telemetry().get("gpu_util_mean_pct")


def failed_pct(result: BenchResult) -> float:
    finished = result.metrics.completed + result.metrics.failed
    return 100.0 * result.metrics.failed / finished if finished else NAN


def _increase_pct(base_s: float, loaded_s: float) -> float:
    return 100.0 * (loaded_s / base_s - 1.0) if base_s > 0 and not math.isnan(loaded_s) else NAN


def knee_metrics(knee: Sequence[BenchResult], knee_concurrency: int) -> dict[str, float]:
    """Latency increase and error rate at the first cap above the knee, and at every cap, against the lowest cap."""
    points = sorted((r for r in knee if r.config.max_concurrency), key=lambda r: r.config.max_concurrency)
    metrics: dict[str, float] = {}
    if points:
        base_s = points[0].metrics.e2e.mean_s
        for point in points:
            cap = point.config.max_concurrency
            metrics[f"knee_c{cap}_latency_increase_pct"] = _increase_pct(base_s, point.metrics.e2e.mean_s)
            metrics[f"knee_c{cap}_error_rate_pct"] = failed_pct(point)
    above = next((r for r in points if r.config.max_concurrency > knee_concurrency), None)
    if above is None:
        return {**metrics, "knee_latency_increase_pct": NAN, "knee_error_rate_pct": NAN}
    cap = above.config.max_concurrency
    return {**metrics, "knee_latency_increase_pct": metrics[f"knee_c{cap}_latency_increase_pct"],
            "knee_error_rate_pct": metrics[f"knee_c{cap}_error_rate_pct"], "knee_concurrency_above": float(cap)}


@dataclass(frozen=True)
class MaxLoad:
    """One engine's maximum load as the headline quotes it: a number, or a bound on one."""
    qps: float  # achieved req/s at the best passing point; the lowest offered rate run when an upper bound
    offered_per_s: float  # the offered rate of that point
    num_requests: int  # requests that point sent (its P99 is about their maximum below ~20)
    is_upper_bound: bool  # no rate met the SLO: the true maximum is below `qps`
    is_lower_bound: bool  # the highest rate run met it: the true maximum is at least `qps`


def max_load(load: Sequence[BenchResult], ttft_p99_slo_s: float) -> MaxLoad | None:
    """See the module docstring; None for a sweep with no complete point."""
    complete = [r for r in load if not r.partial and not math.isnan(r.request_rate_per_s)]
    if not complete:
        return None
    found = find_max_qps(complete, ttft_p99_slo_s)
    if found is None:
        lowest = min(complete, key=lambda r: r.request_rate_per_s)
        return MaxLoad(lowest.request_rate_per_s, lowest.request_rate_per_s, lowest.num_planned, True, False)
    point = _point_at_rate(complete, found.request_rate_per_s)
    highest = max(r.request_rate_per_s for r in complete)
    return MaxLoad(found.achieved_request_throughput_per_s, found.request_rate_per_s, point.num_planned,
                   False, math.isclose(found.request_rate_per_s, highest))


def headline_metrics(baseline: EngineRun, fullpower: EngineRun, *, ttft_p99_slo_s: float,
                     knee_concurrency: int) -> dict[str, float]:
    """See the module docstring."""
    metrics: dict[str, float] = {"ttft_p99_slo_ms": ttft_p99_slo_s * 1e3}
    best: dict[str, MaxLoad | None] = {}
    for run in (baseline, fullpower):
        found = max_load(run.load, ttft_p99_slo_s)
        best[run.name] = found
        metrics[f"{run.name}_max_qps"] = found.qps if found else NAN
        metrics[f"{run.name}_max_qps_offered_per_s"] = found.offered_per_s if found else NAN
        metrics[f"{run.name}_max_qps_num_requests"] = float(found.num_requests) if found else NAN
        metrics[f"{run.name}_max_qps_is_upper_bound"] = float(bool(found and found.is_upper_bound))
        metrics[f"{run.name}_max_qps_is_lower_bound"] = float(bool(found and found.is_lower_bound))
        metrics[f"{run.name}_ready_after_s"] = run.ready_after_s
        util = _gpu_util_pct(_point_at_rate(run.load, found.offered_per_s)) if found else None
        if util is not None:
            metrics[f"{run.name}_gpu_util_pct"] = util
        for key, value in knee_metrics(run.knee, knee_concurrency).items():
            metrics[f"{run.name}_{key}"] = value
    metrics.update(_qps_ratio(best[baseline.name], best[fullpower.name]))
    base_best = best[baseline.name]
    metrics["headline_load_rate_per_s"] = base_best.offered_per_s if base_best else NAN
    at_base = [_point_at_rate(run.load, base_best.offered_per_s) if base_best else None
               for run in (baseline, fullpower)]
    for run, point in zip((baseline, fullpower), at_base):
        metrics[f"{run.name}_p99_e2e_ms"] = point.metrics.e2e.p99_s * 1e3 if point else NAN
    metrics["p99_e2e_ratio"] = _ratio(metrics["baseline_p99_e2e_ms"], metrics["fullpower_p99_e2e_ms"])
    metrics["native_latency_increase_pct"] = metrics["baseline_knee_latency_increase_pct"]
    metrics["native_error_rate_pct"] = metrics["baseline_knee_error_rate_pct"]
    return metrics


def _qps_ratio(baseline: MaxLoad | None, fullpower: MaxLoad | None) -> dict[str, float]:
    """Full power / baseline, and which way it is a bound (a bound of each side that points the other way: NaN)."""
    if baseline is None or fullpower is None:
        return {"qps_ratio": NAN, "qps_ratio_is_lower_bound": 0.0, "qps_ratio_is_upper_bound": 0.0}
    lower = baseline.is_upper_bound or fullpower.is_lower_bound  # true ratio >= measured
    upper = baseline.is_lower_bound or fullpower.is_upper_bound  # true ratio <= measured
    ratio = NAN if lower and upper else _ratio(fullpower.qps, baseline.qps)
    return {"qps_ratio": ratio, "qps_ratio_is_lower_bound": float(lower and not upper),
            "qps_ratio_is_upper_bound": float(upper and not lower)}


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return NAN
    return numerator / denominator


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.3g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"


def _bounded(metrics: dict[str, float], name: str, unit: str = "") -> str:
    """A value with "<" / ">=" in front when the record marks it as an upper / lower bound."""
    text = _fmt(metrics.get(name), unit)
    if text == "n/a":
        return text
    if metrics.get(f"{name}_is_upper_bound"):
        return f"< {text}"
    if metrics.get(f"{name}_is_lower_bound"):
        return f">= {text}"
    return text


def headline_markdown(metrics: dict[str, float]) -> str:
    """The headline table as markdown: baseline, full power, ratio, and the article's target."""
    m = metrics.get
    rows = [
        ("max QPS at P99 TTFT <= SLO [req/s]", _bounded(metrics, "baseline_max_qps"),
         _bounded(metrics, "fullpower_max_qps"), _bounded(metrics, "qps_ratio", "x"), f">= {TARGET_QPS_RATIO}x"),
        (f"P99 E2E at the baseline's max load ({_fmt(m('headline_load_rate_per_s'))} req/s) [ms]",
         m("baseline_p99_e2e_ms"), m("fullpower_p99_e2e_ms"), _fmt(m("p99_e2e_ratio"), "x lower"),
         f">= {TARGET_P99_E2E_RATIO}x lower"),
        ("GPU utilisation at own max load [%]", m("baseline_gpu_util_pct"), m("fullpower_gpu_util_pct"),
         "", f">= {TARGET_GPU_UTIL_PCT:g} % (full power)"),
        ("knee: mean E2E increase above the knee [%]", m("baseline_knee_latency_increase_pct"),
         m("fullpower_knee_latency_increase_pct"), "", "+370 % (native)"),
        ("knee: error rate above the knee [%]", m("baseline_knee_error_rate_pct"),
         m("fullpower_knee_error_rate_pct"), "", "12 % (native)"),
    ]
    lines = ["| metric | baseline (hf generate) | full power (lab engine) | ratio | article |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {b if isinstance(b, str) else _fmt(b)} | {f if isinstance(f, str) else _fmt(f)} "
              f"| {ratio} | {target} |" for name, b, f, ratio, target in rows]
    return "\n".join(lines)
