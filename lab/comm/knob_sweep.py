"""Run a sweep once per knob variant, each in its own torchrun processes, and compare each with the default.

Contract: `run_knob_sweep(config, nproc, variants, work_dir, base_env=None, runner=run_sweep)` runs `config`
under `variant_environment(variant, base_env)` in `work_dir/<variant>/`, one variant after the other, and returns
one `VariantOutcome` per variant: its `SweepResult`, or the error that stopped it (NCCL may refuse a combination
on some topologies; the others still run). The default, the sweep without any variable set, is the caller's own
run of the same `config` (the notebook's main sweep), so it is measured once.
`knob_rows(default, outcomes, small_max_bytes, large_min_bytes)` is the table: per variant and collective, the
time at decode sizes (<= small_max_bytes) and the bus bandwidth at large sizes (>= large_min_bytes), each as a
ratio to the default at the same sizes (time < 1 and busbw > 1 are better). A size band the sweep did not reach
gives None, never a number. On gloo NCCL's variables change nothing: `knob_note` says so.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.comm.config import SweepConfig
from lab.comm.knobs import KnobVariant, variant_environment
from lab.comm.launch import run_sweep
from lab.comm.results import SweepResult, SweepRow
from lab.errors import LabError

Runner = Callable[..., SweepResult]


@dataclass(frozen=True)
class VariantOutcome:
    variant: KnobVariant
    result: SweepResult | None
    error: str | None = None


@dataclass(frozen=True)
class KnobRow:
    variant: str
    env: str  # "NCCL_ALGO=Ring, NCCL_PROTO=LL"
    collective: str
    small_time_ratio: float | None  # geometric mean over decode sizes of variant time / default time
    small_time_us: float | None  # the variant's mean time over those sizes
    large_busbw_ratio: float | None  # mean over large sizes of variant busbw / default busbw
    large_busbw_gbps: float | None  # the variant's mean busbw over those sizes
    error: str | None = None


def run_knob_sweep(config: SweepConfig, nproc: int, variants: Sequence[KnobVariant], work_dir: Path,
                   base_env: Mapping[str, str] | None = None, runner: Runner = run_sweep,
                   timeout_s: float = 600.0) -> list[VariantOutcome]:
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise LabError(f"knob variant names repeat: {', '.join(names)}")
    outcomes = []
    for variant in variants:
        env = variant_environment(variant, base_env)
        try:
            result = runner(config, nproc, work_dir / variant.name, env=env, timeout_s=timeout_s)
            outcomes.append(VariantOutcome(variant, result))
        except LabError as error:
            outcomes.append(VariantOutcome(variant, None, str(error).splitlines()[0]))
    return outcomes


def _paired(default: Sequence[SweepRow], variant: Sequence[SweepRow], keep) -> list[tuple[SweepRow, SweepRow]]:
    base = {r.size_bytes: r for r in default if keep(r.size_bytes)}
    return [(base[r.size_bytes], r) for r in variant if r.size_bytes in base]


def _row(outcome: VariantOutcome, default: SweepResult, collective: str, small_max: int, large_min: int) -> KnobRow:
    assert outcome.result is not None
    mine = outcome.result.rows_of(collective)
    small = _paired(default.rows_of(collective), mine, lambda s: s <= small_max)
    large = _paired(default.rows_of(collective), mine, lambda s: s >= large_min)
    return KnobRow(
        outcome.variant.name, outcome.variant.describe(), collective,
        math.exp(sum(math.log(v.time_us / d.time_us) for d, v in small) / len(small)) if small else None,
        sum(v.time_us for _, v in small) / len(small) if small else None,
        sum(v.busbw_gbps / d.busbw_gbps for d, v in large) / len(large) if large else None,
        sum(v.busbw_gbps for _, v in large) / len(large) if large else None)


def knob_rows(default: SweepResult, outcomes: Sequence[VariantOutcome], small_max_bytes: int,
              large_min_bytes: int) -> list[KnobRow]:
    collectives = list(dict.fromkeys(r.collective for r in default.rows))
    rows = []
    for outcome in outcomes:
        if outcome.result is None:
            rows.append(KnobRow(outcome.variant.name, outcome.variant.describe(), "-", None, None, None, None,
                                outcome.error))
            continue
        rows += [_row(outcome, default, c, small_max_bytes, large_min_bytes) for c in collectives]
    return rows


def knob_note(default: SweepResult) -> str:
    if default.backend != "nccl":
        return (f"backend {default.backend_label}: NCCL variables have no effect on gloo; these ratios are "
                "run-to-run noise and check only that every variant runs")
    return (f"{default.backend_label}, {default.nranks} ranks: each variant in its own processes after the default; "
            "NVLS variables as the machine sets them")
