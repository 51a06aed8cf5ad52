"""Plots of a sweep, as new matplotlib `Figure`s (never pyplot's global figure).

Contract: `plot_busbw(result, link)`: bus bandwidth against size (both axes log), one line per collective, the
decode sizes shaded, and, when the link is known, its line rate and NCCL's achievable figure as horizontal lines
(`lab.comm.links`); a CPU run says "gloo (CPU)" in its title. `plot_latency(result)`: the all_reduce's time at
small sizes, eager and (NCCL) replayed from a CUDA graph; without graphs the title says why.
"""
from __future__ import annotations

from matplotlib.figure import Figure

from lab.comm.config import DECODE_MAX_BYTES
from lab.comm.links import LinkPeak
from lab.comm.results import SweepResult
from lab.comm.sizes import format_size


def _size_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sizes[:: max(1, len(sizes) // 8)]
    ax.set_xticks(ticks, [format_size(s) for s in ticks], rotation=30, fontsize=8)
    ax.set_xlabel("message size (nccl-tests' S)")


def plot_busbw(result: SweepResult, link: LinkPeak | None) -> Figure:
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    for collective in dict.fromkeys(r.collective for r in result.rows):
        rows = result.rows_of(collective)
        ax.plot([r.size_bytes for r in rows], [r.busbw_gbps for r in rows], marker=".", label=collective)
    if link is not None:
        ax.axhline(link.line_rate_gbps, color="black", linestyle="--", label=f"{link.name}: line rate")
        if link.nccl_busbw_gbps is not None:
            ax.axhline(link.nccl_busbw_gbps, color="gray", linestyle=":",
                       label="NCCL's achievable busbw (nccl-tests#212)")
    smallest = min(r.size_bytes for r in result.rows)
    if smallest <= DECODE_MAX_BYTES:
        ax.axvspan(smallest, DECODE_MAX_BYTES, color="tab:green", alpha=0.08, label="decode sizes (<= 64 KiB)")
    _size_axis(ax, sorted({r.size_bytes for r in result.rows}))
    ax.set_yscale("log")  # busbw spans orders of magnitude from 8 B to 1 GiB; the peak lines stay readable
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(f"busbw, {result.backend_label}, {result.nranks} ranks, {result.dtype}"
                 + ("" if link else " (no link peak known for this device)"), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def plot_latency(result: SweepResult) -> Figure:
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    sizes = [r.size_bytes for r in result.latency]
    ax.plot(sizes, [r.eager_us for r in result.latency], marker="o", label="eager (one launch per all_reduce)")
    if result.latency and all(r.graph_us is not None for r in result.latency):
        ax.plot(sizes, [r.graph_us for r in result.latency], marker="s", label="CUDA graph replay")
        title = f"all_reduce latency, {result.backend_label}, {result.nranks} ranks"
    else:
        title = f"all_reduce latency, {result.backend_label}: CUDA graphs {result.graphs}"
    if sizes:
        _size_axis(ax, sizes)
    ax.set_ylabel("time per all_reduce (us)")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure
