"""A sweep, its knob table and its targets as the lab's result record: params, metrics, one child per point.

Contract: `sweep_metrics(result)` -> per collective its peak busbw, its time at the smallest size and its wrong
elements; the all_reduce's slowest eager (and, on NCCL, CUDA-graph) time at decode sizes. `knob_metrics(rows)`
-> each variant's ratios (`knob_<variant>_<collective>_small_time_ratio`, `..._large_busbw_ratio`), only where
measured. `target_metrics(targets)` -> measured values and met (1/0) where a target could be judged.
`sweep_params(result, config, nproc)` names the backend (its label says "gloo (CPU)" off NCCL), the device, the
ranks, the sizes and the NCCL variables the run saw. `point_children(experiment, result)` is one child record
per collective and size; `knob_children(experiment, rows)` one per knob row. `sweep_record(...)` puts them
together for `lab bench comm` (a notebook passes the same pieces to `lab.track.record_notebook`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lab.comm.config import SweepConfig
from lab.comm.knob_sweep import KnobRow
from lab.comm.results import SweepResult
from lab.comm.sizes import format_size
from lab.comm.targets import Target
from lab.track.record import ResultRecord


def sweep_metrics(result: SweepResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for collective in dict.fromkeys(r.collective for r in result.rows):
        rows = result.rows_of(collective)
        metrics[f"{collective}_busbw_peak_gbps"] = max(r.busbw_gbps for r in rows)
        metrics[f"{collective}_time_us_smallest"] = rows[0].time_us
        metrics[f"{collective}_wrong"] = float(sum(r.wrong for r in rows))
    if result.latency:
        metrics["all_reduce_decode_eager_us_max"] = max(r.eager_us for r in result.latency)
        graphs = [r.graph_us for r in result.latency if r.graph_us is not None]
        if len(graphs) == len(result.latency):
            metrics["all_reduce_decode_graph_us_max"] = max(graphs)
    return metrics


def _slug(text: str) -> str:
    return text.replace("-", "_")


def knob_metrics(rows: Sequence[KnobRow]) -> dict[str, float]:
    metrics = {}
    for row in rows:
        key = f"knob_{_slug(row.variant)}_{row.collective}"
        if row.small_time_ratio is not None:
            metrics[f"{key}_small_time_ratio"] = row.small_time_ratio
        if row.large_busbw_ratio is not None:
            metrics[f"{key}_large_busbw_ratio"] = row.large_busbw_ratio
    metrics["knob_variants_failed"] = float(len({r.variant for r in rows if r.error}))
    return metrics


def target_metrics(targets: Sequence[tuple[str, Target]]) -> dict[str, float]:
    metrics = {}
    for key, target in targets:
        if target.measured is not None:
            metrics[f"target_{key}_measured"] = target.measured
        if target.met is not None:
            metrics[f"target_{key}_met"] = float(target.met)
    return metrics


def sweep_params(result: SweepResult, config: SweepConfig, nproc: int) -> dict[str, Any]:
    return {"backend": result.backend_label, "device": result.device, "nproc": nproc, "dtype": config.dtype,
            "collectives": list(config.collectives), "min_bytes": config.min_bytes, "max_bytes": config.max_bytes,
            "factor": config.factor, "warmup_iters": config.warmup_iters, "iters": config.iters,
            "sizes": f"{format_size(config.min_bytes)}..{format_size(config.max_bytes)} x{config.factor}",
            "cuda_graphs": result.graphs, "nccl_env": dict(result.nccl_env), "versions": dict(result.versions)}


def point_children(experiment: str, result: SweepResult) -> tuple[ResultRecord, ...]:
    return tuple(ResultRecord(experiment, {"collective": r.collective, "size_bytes": r.size_bytes, "count": r.count},
                              {"time_us": r.time_us, "algbw_gbps": r.algbw_gbps, "busbw_gbps": r.busbw_gbps,
                               "wrong": r.wrong}) for r in result.rows)


def knob_children(experiment: str, rows: Sequence[KnobRow]) -> tuple[ResultRecord, ...]:
    children = []
    for row in rows:
        values = dataclasses.asdict(row)
        params = {k: values[k] for k in ("variant", "env", "collective", "error")}
        metrics = {k: v for k, v in values.items() if k not in params and v is not None}
        children.append(ResultRecord(experiment, params, metrics))
    return tuple(children)


def sweep_record(experiment: str, result: SweepResult, config: SweepConfig, nproc: int,
                 knob_rows: Sequence[KnobRow] = (), targets: Sequence[tuple[str, Target]] = (),
                 artifacts: Sequence[str] = ()) -> ResultRecord:
    from lab.track import collect_environment

    metrics = {**sweep_metrics(result), **(knob_metrics(knob_rows) if knob_rows else {}), **target_metrics(targets)}
    params = {**sweep_params(result, config, nproc), "targets": {k: t.note for k, t in targets}}
    return ResultRecord(experiment, params, metrics, environment=collect_environment(), artifacts=tuple(artifacts),
                        children=point_children(experiment, result) + knob_children(experiment, knob_rows))
