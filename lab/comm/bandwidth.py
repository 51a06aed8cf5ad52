"""nccl-tests' arithmetic: what a collective's size means, its algorithm bandwidth and its bus bandwidth.

Source: NVIDIA/nccl-tests, doc/PERFORMANCE.md ("Performance reported by NCCL tests"). For a collective of size S
bytes that took t seconds on n ranks:
- algbw = S / t;
- busbw = algbw * factor, where factor is 2(n-1)/n for all_reduce (n-1 additions and n assignments per element,
  2(n-1) transfers over n links) and (n-1)/n for all_gather, reduce_scatter and all_to_all. busbw is comparable
  with the link's peak bandwidth whatever n is; algbw is not.
- S is the whole array: all_reduce's buffer; all_gather's output (n x one rank's input); reduce_scatter's input
  (n x one rank's output); all_to_all's buffer on one rank (n chunks, one per peer).
GB here is 1e9 bytes, as nccl-tests prints it. Torch-free: the tests check it on hand-computed cases.

`buffer_plan(collective, size_bytes, nranks, elem_bytes)` turns a requested size into element counts per rank;
a size too small for one element per rank is rounded up to it, and `BufferPlan.size_bytes` is what was run.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
GB = 1e9


def check_collective(name: str) -> str:
    if name not in COLLECTIVES:
        raise LabError(f"unknown collective {name!r}; valid collectives: {', '.join(COLLECTIVES)}")
    return name


def bus_factor(collective: str, nranks: int) -> float:
    check_collective(collective)
    if nranks < 2:
        raise LabError(f"a collective needs at least 2 ranks, got {nranks}")
    n = nranks
    return 2 * (n - 1) / n if collective == "all_reduce" else (n - 1) / n


def algbw_gbps(size_bytes: int, time_s: float) -> float:
    if time_s <= 0:
        raise ValueError(f"a collective's time must be positive, got {time_s} s")
    return size_bytes / time_s / GB


def busbw_gbps(collective: str, size_bytes: int, time_s: float, nranks: int) -> float:
    return algbw_gbps(size_bytes, time_s) * bus_factor(collective, nranks)


@dataclass(frozen=True)
class BufferPlan:
    collective: str
    size_bytes: int  # nccl-tests' S for what is run (see the module docstring)
    input_elems: int  # one rank's input buffer
    output_elems: int  # one rank's output buffer (all_reduce: the same buffer, in place)


def buffer_plan(collective: str, size_bytes: int, nranks: int, elem_bytes: int) -> BufferPlan:
    check_collective(collective)
    if nranks < 2:
        raise LabError(f"a collective needs at least 2 ranks, got {nranks}")
    if collective == "all_reduce":
        elems = max(1, size_bytes // elem_bytes)
        return BufferPlan(collective, elems * elem_bytes, elems, elems)
    per_rank = max(1, size_bytes // elem_bytes // nranks)  # one chunk per rank: S must split evenly
    whole = per_rank * nranks
    if collective == "all_gather":
        return BufferPlan(collective, whole * elem_bytes, per_rank, whole)
    if collective == "reduce_scatter":
        return BufferPlan(collective, whole * elem_bytes, whole, per_rank)
    return BufferPlan(collective, whole * elem_bytes, whole, whole)  # all_to_all


def buffer_plans(collective: str, sizes: tuple[int, ...], nranks: int, elem_bytes: int) -> tuple[BufferPlan, ...]:
    """One plan per distinct size actually run (small requested sizes can round up to the same one)."""
    plans: dict[int, BufferPlan] = {}
    for size in sizes:
        plan = buffer_plan(collective, size, nranks, elem_bytes)
        plans.setdefault(plan.size_bytes, plan)
    return tuple(plans.values())
