"""The article's NCCL claim ("all-reduce 12 ms -> 3.2 ms with topology-aware tuning") as this run measures it.

Contract: `claim_metrics(default, outcomes, size) -> ClaimReading`: at `size` ("256M" or bytes; the article states no
size, so the notebook names one), `allreduce_latency_baseline_ms` is the default all_reduce's time (NCCL as the
machine sets it up: the plain path) and `allreduce_latency_ms` the fastest of the default and every knob variant
that ran (the tuned path), both from the same run on the same GPUs; `variant` names the winner. These are the
metric names `lab.report.claims` reads. No metric at all where the claim cannot be read: a gloo run (NCCL's
knobs do nothing there) or a size the sweep did not run; `note` says which.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lab.comm.knob_sweep import VariantOutcome
from lab.comm.results import SweepResult
from lab.comm.sizes import format_size, parse_size


@dataclass(frozen=True)
class ClaimReading:
    metrics: dict[str, float] = field(default_factory=dict)
    variant: str | None = None  # "default" or the knob variant that was fastest
    note: str = ""


def _time_us(result: SweepResult, size_bytes: int) -> float | None:
    return next((r.time_us for r in result.rows_of("all_reduce") if r.size_bytes == size_bytes), None)


def claim_metrics(default: SweepResult, outcomes: Sequence[VariantOutcome], size: int | str) -> ClaimReading:
    size_bytes = parse_size(size)
    if default.backend != "nccl":
        return ClaimReading(note=f"{default.backend_label}: NCCL tuning is not measured on gloo")
    baseline = _time_us(default, size_bytes)
    if baseline is None:
        return ClaimReading(note=f"the sweep ran no all_reduce of {format_size(size_bytes)}")
    times = {"default": baseline}
    for outcome in outcomes:
        measured = None if outcome.result is None else _time_us(outcome.result, size_bytes)
        if measured is not None:
            times[outcome.variant.name] = measured
    best = min(times, key=times.__getitem__)
    return ClaimReading({"allreduce_latency_baseline_ms": baseline / 1e3, "allreduce_latency_ms": times[best] / 1e3},
                        best, f"all_reduce of {format_size(size_bytes)}: default {baseline:.1f} us, fastest {best} "
                        f"{times[best]:.1f} us, of {len(times)} settings")
