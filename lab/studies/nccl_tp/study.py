"""The notebook's knob sweep and record: what notebook 08 measured, as params, metrics and children.

Contract: `run_knobs(config, nproc, variants, work_dir, default, timeout_s)` runs the named variants
(`lab.comm.knobs.parse_variant`: built-in names or NAME:VAR=VALUE,...) of the notebook's sweep `config`, each in
its own torchrun processes, against `default` (the notebook's main sweep of the same config), and returns a
`KnobStudy`: the table rows, the note that says what they mean on this backend, and each variant's outcome
(the claim's reading, `claim.claim_metrics`, looks at one size across them). `study_metrics`,
`study_params` and `study_children` assemble the record from `lab.comm.summary`; `record_note(result)` says
which backend and device gave the numbers, and that a gloo run checks the road and claims nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.comm.config import SweepConfig
from lab.comm.knob_sweep import KnobRow, VariantOutcome, knob_note, knob_rows, run_knob_sweep
from lab.comm.knobs import parse_variant
from lab.comm.results import SweepResult
from lab.comm.summary import knob_children, knob_metrics, point_children, sweep_metrics, sweep_params, target_metrics
from lab.comm.targets import LARGE_MIN_BYTES, Target
from lab.studies.nccl_tp.claim import ClaimReading
from lab.track.record import ResultRecord


@dataclass(frozen=True)
class KnobStudy:
    rows: tuple[KnobRow, ...]
    note: str
    outcomes: tuple[VariantOutcome, ...]  # each variant's whole sweep, for the claim's reading at one size


def run_knobs(config: SweepConfig, nproc: int, variants: Sequence[str], work_dir: Path, default: SweepResult,
              timeout_s: float = 600.0) -> KnobStudy:
    parsed = [parse_variant(text) for text in variants]
    work_dir.mkdir(parents=True, exist_ok=True)  # the record names the folder even when no variant runs
    outcomes = run_knob_sweep(config, nproc, parsed, work_dir, timeout_s=timeout_s)
    rows = knob_rows(default, outcomes, config.latency_max_bytes, LARGE_MIN_BYTES)
    return KnobStudy(tuple(rows), knob_note(default), tuple(outcomes))


def study_metrics(result: SweepResult, knobs: KnobStudy, targets: Sequence[tuple[str, Target]], claim: ClaimReading,
                  tp: dict[str, float]) -> dict[str, float]:
    return {**sweep_metrics(result), **knob_metrics(knobs.rows), **target_metrics(targets), **claim.metrics, **tp}


def study_params(result: SweepResult, config: SweepConfig, nproc: int, knobs: KnobStudy,
                 targets: Sequence[tuple[str, Target]], claim: ClaimReading) -> dict[str, Any]:
    return {**sweep_params(result, config, nproc), "knob_note": knobs.note,
            "targets": {key: target.note for key, target in targets}, "claim_note": claim.note,
            "claim_variant": claim.variant, "note": record_note(result)}


def study_children(experiment: str, result: SweepResult, knobs: KnobStudy) -> tuple[ResultRecord, ...]:
    return point_children(experiment, result) + knob_children(experiment, knobs.rows)


def record_note(result: SweepResult) -> str:
    if result.backend != "nccl":
        return (f"{result.backend_label}, {result.nranks} processes: the same code as on GPUs, run on the CPU to "
                "check the road (sizes, checks, records); no NCCL or NVLink number")
    return f"{result.backend_label}, {result.nranks} GPUs, NCCL {result.versions.get('nccl', '?')}"
