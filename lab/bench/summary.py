"""Text summaries of benchmark results for the terminal.

Contract: `summary_text(result)` is a vLLM-style block (requests, throughputs, goodput, then
mean / median / P90 / P99 of TTFT, TPOT, ITL and E2E in ms, then per-tier P99s and errors).
`headline(results, ttft_p99_slo_s)` is a small JSON-ready dict for the command's last stdout line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lab.bench.runner import BenchResult
from lab.bench.sweep import find_max_qps

WIDTH = 60


def _line(name: str, value: Any) -> str:
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{name:<44}{text:>16}"


def summary_text(result: BenchResult) -> str:
    m = result.metrics
    rate = result.request_rate_per_s
    title = " Serving benchmark result" + (" (PARTIAL: stopped early)" if result.partial else " ")
    lines = [title.center(WIDTH, "="),
             _line("Offered request rate (req/s):", "trace" if math.isnan(rate) else rate),
             _line("Successful requests:", m.completed),
             _line("Failed requests:", m.failed),
             _line("Benchmark duration (s):", m.duration_s),
             _line("Total input tokens:", m.total_input_tokens),
             _line("Total generated tokens:", m.total_output_tokens),
             _line("Request throughput (req/s):", m.request_throughput_per_s),
             _line("Output token throughput (tok/s):", m.output_throughput_tok_per_s),
             _line("Total token throughput (tok/s):", m.total_throughput_tok_per_s)]
    if m.cancelled:
        lines.append(_line("Cancelled requests (Ctrl-C):", m.cancelled))
    if m.goodput_per_s is not None:
        slos = " ".join(f"{s.metric}:{s.limit_ms:g}" for s in m.slos)
        lines.append(_line(f"Request goodput (req/s) [{slos}]:", m.goodput_per_s))
    for label, stats in (("Time to First Token", m.ttft), ("Time per Output Token (excl. 1st token)", m.tpot),
                         ("Inter-token Latency", m.itl), ("End-to-end Latency", m.e2e)):
        short = {"Time to First Token": "TTFT", "Inter-token Latency": "ITL", "End-to-end Latency": "E2EL"}.get(
            label, "TPOT")
        lines.append(f" {label} ".center(WIDTH, "-"))
        for stat in ("mean", "median", "p90", "p99"):
            lines.append(_line(f"{stat.capitalize() if stat in ('mean', 'median') else stat.upper()} {short} (ms):",
                               getattr(stats, f"{stat}_s") * 1000.0))
    if len(result.tier_metrics) > 1:
        lines.append(" Per tier ".center(WIDTH, "-"))
        for tier, tm in result.tier_metrics.items():
            lines.append(_line(f"{tier}: ok / failed / P99 TTFT (ms):",
                               f"{tm.completed} / {tm.failed} / {tm.ttft.p99_s * 1000:.1f}"))
    for kind, count in m.errors_by_kind.items():
        lines.append(_line(f"Errors {kind}:", count))
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def _number(value: float, digits: int = 3) -> float | str | None:
    # Strict JSON has no NaN or inf: no data is null, an infinite rate is the string "inf".
    if math.isnan(value):
        return None
    return round(value, digits) if math.isfinite(value) else str(value)


def headline(results: Sequence[BenchResult], ttft_p99_slo_s: float | None = None) -> dict[str, Any]:
    points = [{
        "request_rate_per_s": _number(r.request_rate_per_s),
        "max_concurrency": r.config.max_concurrency,
        "completed": r.metrics.completed, "failed": r.metrics.failed,
        "request_throughput_per_s": _number(r.metrics.request_throughput_per_s, 4),
        "output_throughput_tok_per_s": _number(r.metrics.output_throughput_tok_per_s),
        "ttft_p99_ms": _number(r.metrics.ttft.p99_s * 1000.0),
        "tpot_p99_ms": _number(r.metrics.tpot.p99_s * 1000.0),
        "e2el_p99_ms": _number(r.metrics.e2e.p99_s * 1000.0),
        "partial": r.partial,
    } for r in results]
    out: dict[str, Any] = {"points": points}
    if ttft_p99_slo_s is not None:
        best = find_max_qps(results, ttft_p99_slo_s)
        out["max_qps_request_rate_per_s"] = None if best is None else _number(best.request_rate_per_s)
        out["max_qps_achieved_per_s"] = None if best is None else _number(best.achieved_request_throughput_per_s, 4)
    return out
