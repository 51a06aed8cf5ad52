"""Load generation and serving benchmarks against any OpenAI-compatible server.

Notebook-facing API (names resolve on first use, so `import lab.bench` stays cheap):

    from lab.bench import BenchConfig, RandomWorkload, PoissonArrivals, run_benchmark, sweep_rates, find_max_qps
    config = BenchConfig(base_url="http://127.0.0.1:8000",
                         workload=RandomWorkload(num_requests=200, input_tokens=256, output_tokens=64))
    results = sweep_rates(config, [1, 2, 4, 8])           # one BenchResult per offered rate
    best = find_max_qps(results, ttft_p99_slo_s=0.5)      # MaxQps or None
    save_results(results, "runs/bench", ttft_p99_slo_s=0.5)   # CSV rows, plots, record, MLflow

Modules, one concept each: `traces` (trace CSVs), `arrivals` (when requests are sent), `prompts`
(exact-length prompts), `tiers` (API-key mixes), `workloads` (lengths and the request plan),
`length_models` (chat lengths fitted to a trace), `client` (one streamed request, timed), `metrics`
(vLLM's metric definitions), `runner` (`BenchConfig` -> `BenchResult`), `utilization` (telemetry
over a run's steady part), `sweep` (rate sweeps, max QPS), `plots`, `record` (outputs and MLflow),
`summary` (terminal text), `cli` (`lab bench serve`). Notebook 03's bounded sweeps and headline
table are a study (`lab.studies.fullpower`); `lab bench offline` is `lab.studies.roofline`'s.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_trace": "lab.bench.traces",
    "default_trace_path": "lab.paths",
    "Trace": "lab.bench.traces",
    "TraceFormatError": "lab.bench.traces",
    "PoissonArrivals": "lab.bench.arrivals",
    "GammaArrivals": "lab.bench.arrivals",
    "ConstantArrivals": "lab.bench.arrivals",
    "FlashSaleArrivals": "lab.bench.arrivals",
    "TraceArrivals": "lab.bench.arrivals",
    "PromptBuilder": "lab.bench.prompts",
    "TierShare": "lab.bench.tiers",
    "TierMix": "lab.bench.tiers",
    "ChatWorkload": "lab.bench.workloads",
    "RandomWorkload": "lab.bench.workloads",
    "TraceWorkload": "lab.bench.workloads",
    "plan_requests": "lab.bench.workloads",
    "RequestResult": "lab.bench.client",
    "Slo": "lab.bench.metrics",
    "BenchMetrics": "lab.bench.metrics",
    "LatencyStats": "lab.bench.metrics",
    "compute_metrics": "lab.bench.metrics",
    "BenchConfig": "lab.bench.runner",
    "BenchResult": "lab.bench.runner",
    "run_benchmark": "lab.bench.runner",
    "sweep_rates": "lab.bench.sweep",
    "sweep_concurrency": "lab.bench.sweep",
    "find_max_qps": "lab.bench.sweep",
    "MaxQps": "lab.bench.sweep",
    "plot_latency_cdfs": "lab.bench.plots",
    "plot_latency_vs_rate": "lab.bench.plots",
    "plot_latency_vs_concurrency": "lab.bench.plots",
    "save_results": "lab.bench.record",
    "bench_record": "lab.bench.record",
    "summary_text": "lab.bench.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
