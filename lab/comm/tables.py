"""Text tables for a terminal or a notebook: the sweep as nccl-tests prints it, the knob table, the targets.

Contract: `sweep_table(result)`, `knob_table(rows)` and `target_lines(targets)` return strings; nothing is
computed here that a record does not already hold.
"""
from __future__ import annotations

from collections.abc import Sequence

from lab.comm.knob_sweep import KnobRow
from lab.comm.results import SweepResult
from lab.comm.targets import Target


def sweep_table(result: SweepResult) -> str:
    lines = [f"# {result.backend_label}, {result.nranks} ranks, {result.dtype}; CUDA graphs: {result.graphs}",
             f"{'collective':>15} {'size (B)':>12} {'count':>11} {'time (us)':>11} {'algbw':>9} {'busbw':>9} "
             f"{'#wrong':>6}"]
    for r in result.rows:
        lines.append(f"{r.collective:>15} {r.size_bytes:>12} {r.count:>11} {r.time_us:>11.2f} {r.algbw_gbps:>9.3f} "
                     f"{r.busbw_gbps:>9.3f} {r.wrong:>6}")
    for r in result.latency:
        graph = "n/a" if r.graph_us is None else f"{r.graph_us:.2f}"
        lines.append(f"{'latency':>15} {r.size_bytes:>12} eager {r.eager_us:.2f} us, graph {graph} us")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "   -   " if value is None else f"{value:7.3f}"


def knob_table(rows: Sequence[KnobRow]) -> str:
    lines = ["ratios to the default: time at decode sizes (up to the latency limit), busbw at >= 256 MiB; time < 1 "
             "and busbw > 1 are better; '-': that size band was not run",
             f"{'variant':>14} {'collective':>15} {'time':>9} {'busbw':>11}  env"]
    for r in rows:
        if r.error:
            lines.append(f"{r.variant:>14} {'FAILED':>15}  {r.env}: {r.error}")
        else:
            lines.append(f"{r.variant:>14} {r.collective:>15} {_ratio(r.small_time_ratio):>9} "
                         f"{_ratio(r.large_busbw_ratio):>11}  {r.env}")
    return "\n".join(lines)


def target_lines(targets: Sequence[Target]) -> str:
    verdict = {True: "met ", False: "MISS", None: "n/a "}
    return "\n".join(f"{verdict[t.met]} {t.name}: {t.note}" for t in targets)
