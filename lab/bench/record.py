"""Benchmark outputs: per-request CSV rows, plots, a result record, and its MLflow run.

Contract: `save_results(results, out_dir, ...)` writes into `out_dir`
- `requests.csv` (one run) or `requests_<i>_<rate>[_c<cap>].csv` (one per sweep point): one row per
  request that was sent (`request_rows`), latencies in seconds, ITL gaps as a JSON list;
- `latency_cdf.png`, plus `latency_vs_rate.png` for a sweep of more than one rate
  (`latency_vs_concurrency.png` when the points differ in `max_concurrency`), else
  `utilization.png` (CPU and, when present, GPU utilisation over the run);
- `record.json`: a `ResultRecord` (experiment `bench-serve` unless named) whose params are the
  config (no API keys) and whose metrics are `BenchResult.flat_metrics()`; a sweep's record holds
  one child record per rate and, given an SLO, `max_qps_*` metrics from `find_max_qps`.
`bench_record(results, ...)` builds that record without writing anything (a notebook passes its
params, metrics and children to `lab.track.record_notebook`). With `track=True` the record is
logged to MLflow (`lab.track.log_record`; the store from `tracking_uri`, else
MLFLOW_TRACKING_URI, else the project's). Returns `BenchOutputs`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.bench.plots import plot_latency_cdfs, plot_latency_vs_concurrency, plot_latency_vs_rate
from lab.bench.runner import BenchResult
from lab.bench.sweep import find_max_qps

if TYPE_CHECKING:
    from lab.track.record import ResultRecord

EXPERIMENT = "bench-serve"


@dataclass(frozen=True)
class BenchOutputs:
    out_dir: Path
    record_path: Path
    requests_csvs: tuple[Path, ...]
    plots: tuple[Path, ...]
    run_id: str | None  # None when not tracked


def request_rows(result: BenchResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.results:
        row = dataclasses.asdict(r)
        row["itl_s"] = json.dumps([round(gap, 6) for gap in r.itl_s])
        rows.append(row)
    return rows


def write_requests_csv(result: BenchResult, path: Path) -> Path:
    rows = request_rows(result)
    fields = [f.name for f in dataclasses.fields(type(result.results[0]))] if result.results else ["index"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def point_params(result: BenchResult) -> dict[str, Any]:
    return {**result.config.describe(), "model": result.model, "num_planned": result.num_planned}


def bench_record(results: Sequence[BenchResult], *, experiment: str = EXPERIMENT,
                 ttft_p99_slo_s: float | None = None, artifacts: Sequence[str] = ()) -> ResultRecord:
    """The result record of one run or a sweep (children per point); see the module docstring."""
    from lab.track import ResultRecord, collect_environment

    if len(results) > 1:
        params = {**point_params(results[0]), "request_rates_per_s": [r.request_rate_per_s for r in results],
                  "max_concurrencies": [r.config.max_concurrency for r in results]}
        params.pop("request_rate_per_s", None)
        params.pop("max_concurrency", None)
        metrics: dict[str, float] = {"points": float(len(results)), "partial": float(any(r.partial for r in results))}
        children = tuple(ResultRecord(experiment=experiment, params=point_params(r), metrics=r.flat_metrics())
                         for r in results)
    else:
        params, metrics, children = point_params(results[0]), results[0].flat_metrics(), ()
    if ttft_p99_slo_s is not None:
        params["ttft_p99_slo_s"] = ttft_p99_slo_s
        best = find_max_qps(results, ttft_p99_slo_s)
        metrics["max_qps_request_rate_per_s"] = best.request_rate_per_s if best else math.nan
        metrics["max_qps_achieved_per_s"] = best.achieved_request_throughput_per_s if best else math.nan
    return ResultRecord(experiment=experiment, params=params, metrics=metrics, environment=collect_environment(),
                        artifacts=tuple(artifacts), children=children)


def save_results(results: Sequence[BenchResult], out_dir: str | Path, *, experiment: str = EXPERIMENT,
                 ttft_p99_slo_s: float | None = None, track: bool = True,
                 tracking_uri: str | None = None) -> BenchOutputs:
    """See the module docstring."""
    from lab.track import log_record

    if not results:
        raise ValueError("no benchmark results to save")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep = len(results) > 1
    csvs = tuple(
        write_requests_csv(r, out / (f"requests_{i}_{_point_slug(r)}.csv" if sweep else "requests.csv"))
        for i, r in enumerate(results)
    )
    figures = {"latency_cdf.png": plot_latency_cdfs(results)}
    if sweep and len({r.config.max_concurrency for r in results}) > 1:
        figures["latency_vs_concurrency.png"] = plot_latency_vs_concurrency(results, ttft_p99_slo_s)
    elif sweep:
        figures["latency_vs_rate.png"] = plot_latency_vs_rate(results, ttft_p99_slo_s)
    elif results[0].telemetry is not None:
        from lab.gpu.plot import plot_trace

        figures["utilization.png"] = plot_trace(results[0].telemetry, "CPU / GPU utilisation during the run")
    plots = []
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
        plots.append(out / name)
    record = bench_record(results, experiment=experiment, ttft_p99_slo_s=ttft_p99_slo_s,
                          artifacts=[p.name for p in (*csvs, *plots)])
    record_path = out / "record.json"
    if track:
        run_id = log_record(record, record_path=record_path, tracking_uri=tracking_uri)
    else:
        run_id = None
        record.save(record_path)
    return BenchOutputs(out, record_path, csvs, tuple(plots), run_id)


def _point_slug(result: BenchResult) -> str:
    rate = result.request_rate_per_s
    slug = "trace" if math.isnan(rate) else ("inf" if math.isinf(rate) else f"{rate:g}".replace(".", "p"))
    cap = result.config.max_concurrency
    return slug if cap is None else f"{slug}_c{cap}"
