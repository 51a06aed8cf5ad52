"""The article's headline table, measured: full power against each peer, in one run on one card.

Contract: an `EngineRun` holds what one engine's replica measured: its rate sweep (`load`, ascending offered
rates, `lab.studies.fullpower.load_sweep.sweep_load`), its concurrency sweep (`knee`, `sweep_knee`) and the
longest gap between two engine steps per point where the server exports it (`load_step_gaps`,
`knee_step_gaps`: our engine only). `headline_metrics(*runs, ttft_p99_slo_s, knee_concurrency)` takes the run
named "fullpower" and its peers (by name: "hf_cb", transformers' continuous batching, the native deployment
and the fair headline; "untuned", our engine with the article's optimizations off, "before tuning";
"baseline", transformers' static `generate`, the floor) and returns flat metrics whose names
`lab.report.claims` reads (NaN where a value could not be measured).
Per engine, under its run name (`baseline_`, `hf_cb_`, `untuned_`, `fullpower_`):
- `*_max_qps`: achieved request throughput at the highest offered rate whose P99 TTFT met the SLO with no
  failed request (`find_max_qps`); `*_max_qps_offered_per_s` that rate; `*_max_qps_num_requests` how many
  requests that point sent (P99 over fewer than ~20 is about their maximum). Honest bounds instead of
  numbers from nowhere:
  - an engine that met the SLO at *no* rate (the sweep extended down to its floor): its max QPS is below
    the lowest rate it ran, so `*_max_qps` is that offered rate and `*_max_qps_is_upper_bound` is 1.0 (the
    table shows "< x");
  - an engine that met it at its *highest* rate: it never saturated, so `*_max_qps_is_lower_bound` is 1.0
    (the table shows ">= x"): the sweep should go higher.
- `*_saturation_qps` / `*_saturation_output_tok_per_s`: the most it delivered at any complete point of
  either sweep, SLO or not (throughput at saturation, beside the SLO-gated maximum).
- `*_longest_step_gap_ms`: the longest gap between two engine steps over the rate sweep (with
  `*_longest_step_gap_is_upper_bound`); NaN for an engine whose server does not export it.
- `*_gpu_util_pct` at its max-QPS point: mean NVML utilisation over the steady part of that point (without
  ramp-up and drain, `lab.bench.utilization`); absent without a GPU.
- the knee: `*_knee_latency_increase_pct`, the mean E2E of completed requests at the first cap above
  `knee_concurrency` over that at the lowest cap, minus one, in %; `*_knee_error_rate_pct`, the failed
  share there (timeouts included); and the same pair at every cap, `*_knee_c<cap>_latency_increase_pct` /
  `*_knee_c<cap>_error_rate_pct`.
Per peer, under its ratio prefix `<p>` (`RATIO_PREFIXES`: `hf_cb`, `untuned`, `hf` for the "baseline" run):
- `<p>_max_qps_ratio` = full power / peer (the article: 480 -> 2100, 4.4x), with `_is_lower_bound` (1.0 when
  the peer's max is an upper bound or full power's a lower bound: the true ratio is at least this) and
  `_is_upper_bound` (the reverse); NaN when the bounds point both ways or a side has no number.
- at the peer's maximum load (`<p>_load_rate_per_s`: its max-QPS offered rate, or the lowest rate it ran
  when that is an upper bound), where full power was measured too: `<peer run>_p99_e2e_ms`,
  `fullpower_p99_e2e_ms_at_<p>_load` and `<p>_p99_e2e_ratio` = peer / full power (how many times lower full
  power's P99 is; the article: 3.2 s -> 480 ms, 6.7x).
- `<p>_saturation_ratio` = full power's saturation throughput / the peer's.
The issue's targets against hf-cb, never tuned to: `hf_cb_qps_target_met` (max QPS ratio >= 4.4) and
`hf_cb_p99_e2e_target_met` (P99 E2E ratio >= 6.7): 1.0 met, 0.0 missed, NaN when it cannot be told.
The names of the first records stay, for the "baseline" run: `qps_ratio` (+ bounds), `headline_load_rate_per_s`,
`fullpower_p99_e2e_ms` (at its load), `p99_e2e_ratio`, `native_latency_increase_pct` / `native_error_rate_pct`
(its knee pair; the article: above 128 concurrent requests, +370 % latency and 12 % errors).
The table is `lab.studies.fullpower.table.headline_markdown`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.bench.runner import BenchResult
from lab.bench.sweep import find_max_qps
from lab.errors import LabError
from lab.studies.fullpower.step_gaps import LongestStepGap

NAN = math.nan
TARGET_QPS_RATIO = 4.4  # 480 -> 2100 QPS
TARGET_P99_E2E_RATIO = 6.7  # 3.2 s -> 480 ms
TARGET_GPU_UTIL_PCT = 89.0
FULLPOWER = "fullpower"  # the run the peers are compared with
# A peer's run name -> the prefix of the ratios against it ("baseline", transformers' generate, is the floor: "hf").
RATIO_PREFIXES = {"hf_cb": "hf_cb", "untuned": "untuned", "baseline": "hf"}


@dataclass(frozen=True)
class EngineRun:
    name: str  # "fullpower", or a peer: "hf_cb", "untuned", "baseline" (hf generate); the prefix of its metrics
    load: tuple[BenchResult, ...]  # the rate sweep, ascending offered rates
    knee: tuple[BenchResult, ...] = ()  # the concurrency sweep, ascending caps
    ready_after_s: float = NAN  # replica start to ready
    load_step_gaps: tuple[LongestStepGap, ...] = ()  # per `load` point, in its order; () or NaN: not measured
    knee_step_gaps: tuple[LongestStepGap, ...] = ()  # per `knee` point


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


def headline_metrics(*runs: EngineRun, ttft_p99_slo_s: float, knee_concurrency: int) -> dict[str, float]:
    """See the module docstring: full power is the run named "fullpower", every other run a peer."""
    full = next((run for run in runs if run.name == FULLPOWER), None)
    if full is None:
        raise LabError(f"headline_metrics needs a run named {FULLPOWER!r}; got {[run.name for run in runs]}")
    metrics: dict[str, float] = {"ttft_p99_slo_ms": ttft_p99_slo_s * 1e3}
    best = {run.name: max_load(run.load, ttft_p99_slo_s) for run in runs}
    for run in runs:
        metrics.update(_engine_metrics(run, best[run.name], knee_concurrency))
    for peer in (run for run in runs if run.name != FULLPOWER):
        metrics.update(_peer_metrics(peer, full, best[peer.name], best[FULLPOWER], metrics))
    if "baseline" in best:  # the names of the first records (hf generate as "the baseline"), kept for reports
        metrics.update({"qps_ratio": metrics["hf_max_qps_ratio"],
                        "qps_ratio_is_lower_bound": metrics["hf_max_qps_ratio_is_lower_bound"],
                        "qps_ratio_is_upper_bound": metrics["hf_max_qps_ratio_is_upper_bound"],
                        "headline_load_rate_per_s": metrics["hf_load_rate_per_s"],
                        "fullpower_p99_e2e_ms": metrics["fullpower_p99_e2e_ms_at_hf_load"],
                        "p99_e2e_ratio": metrics["hf_p99_e2e_ratio"],
                        "native_latency_increase_pct": metrics["baseline_knee_latency_increase_pct"],
                        "native_error_rate_pct": metrics["baseline_knee_error_rate_pct"]})
    if "hf_cb" in best:
        metrics["hf_cb_qps_target_met"] = target_met(
            metrics["hf_cb_max_qps_ratio"], TARGET_QPS_RATIO, metrics["hf_cb_max_qps_ratio_is_lower_bound"],
            metrics["hf_cb_max_qps_ratio_is_upper_bound"])
        metrics["hf_cb_p99_e2e_target_met"] = target_met(metrics["hf_cb_p99_e2e_ratio"], TARGET_P99_E2E_RATIO)
    return metrics


def _engine_metrics(run: EngineRun, found: MaxLoad | None, knee_concurrency: int) -> dict[str, float]:
    """One engine's own numbers, under its name: max QPS at the SLO, saturation, step gaps, GPU, knee."""
    name = run.name
    metrics = {
        f"{name}_max_qps": found.qps if found else NAN,
        f"{name}_max_qps_offered_per_s": found.offered_per_s if found else NAN,
        f"{name}_max_qps_num_requests": float(found.num_requests) if found else NAN,
        f"{name}_max_qps_is_upper_bound": float(bool(found and found.is_upper_bound)),
        f"{name}_max_qps_is_lower_bound": float(bool(found and found.is_lower_bound)),
        f"{name}_ready_after_s": run.ready_after_s,
        **{f"{name}_{key}": value for key, value in saturation(run).items()},
        **{f"{name}_{key}": value for key, value in longest_step_gap(run).items()},
    }
    util = _gpu_util_pct(_point_at_rate(run.load, found.offered_per_s)) if found else None
    if util is not None:
        metrics[f"{name}_gpu_util_pct"] = util
    for key, value in knee_metrics(run.knee, knee_concurrency).items():
        metrics[f"{name}_{key}"] = value
    return metrics


def saturation(run: EngineRun) -> dict[str, float]:
    """The most an engine delivered at any complete point of either sweep, SLO or not (the knee's caps included:
    every request at once is saturation): request and output-token throughput, each its own maximum."""
    points = [r for r in (*run.load, *run.knee) if not r.partial and r.metrics.completed]
    if not points:
        return {"saturation_qps": NAN, "saturation_output_tok_per_s": NAN}
    return {"saturation_qps": max(r.metrics.request_throughput_per_s for r in points),
            "saturation_output_tok_per_s": max(r.metrics.output_throughput_tok_per_s for r in points)}


def longest_step_gap(run: EngineRun) -> dict[str, float]:
    """The longest gap between two engine steps over the rate sweep (NaN: the server exports none, as
    transformers' engines do); `_is_upper_bound` when that point's value is a bucket's bound."""
    gaps = [gap for gap in run.load_step_gaps if not math.isnan(gap.longest_s)]
    if not gaps:
        return {"longest_step_gap_ms": NAN, "longest_step_gap_is_upper_bound": 0.0}
    longest = max(gaps, key=lambda gap: (gap.longest_s, not gap.is_upper_bound))
    return {"longest_step_gap_ms": longest.longest_s * 1e3,
            "longest_step_gap_is_upper_bound": float(longest.is_upper_bound)}


def _peer_metrics(peer: EngineRun, full: EngineRun, peer_best: MaxLoad | None, full_best: MaxLoad | None,
                  engines: dict[str, float]) -> dict[str, float]:
    """Full power against one peer, under the peer's ratio prefix (`RATIO_PREFIXES`)."""
    p = RATIO_PREFIXES.get(peer.name, peer.name)
    metrics = {f"{p}_max_{key}": value for key, value in _qps_ratio(peer_best, full_best).items()}
    load = peer_best.offered_per_s if peer_best else NAN
    peer_point = _point_at_rate(peer.load, load) if peer_best else None
    full_point = _point_at_rate(full.load, load) if peer_best else None
    metrics[f"{p}_load_rate_per_s"] = load
    metrics[f"{peer.name}_p99_e2e_ms"] = peer_point.metrics.e2e.p99_s * 1e3 if peer_point else NAN
    metrics[f"fullpower_p99_e2e_ms_at_{p}_load"] = full_point.metrics.e2e.p99_s * 1e3 if full_point else NAN
    metrics[f"{p}_p99_e2e_ratio"] = _ratio(metrics[f"{peer.name}_p99_e2e_ms"],
                                           metrics[f"fullpower_p99_e2e_ms_at_{p}_load"])
    metrics[f"{p}_saturation_ratio"] = _ratio(engines[f"{FULLPOWER}_saturation_qps"],
                                              engines[f"{peer.name}_saturation_qps"])
    return metrics


def target_met(ratio: float, target: float, is_lower_bound: float = 0.0, is_upper_bound: float = 0.0) -> float:
    """1.0 met, 0.0 missed, NaN when it cannot be told (no ratio, or a bound on the wrong side of the target)."""
    if math.isnan(ratio):
        return NAN
    if is_lower_bound:  # the true ratio is at least this
        return 1.0 if ratio >= target else NAN
    if is_upper_bound:  # ... at most this
        return 0.0 if ratio < target else NAN
    return float(ratio >= target)


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
