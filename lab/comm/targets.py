"""The issue's two collective targets, computed from a sweep (never tuned to): bus bandwidth and decode latency.

Contract: `busbw_target(result, link, min_bytes=256 MiB, tolerance=0.15)`: the all_reduce's peak busbw at sizes
>= min_bytes against the link's NCCL figure (`LinkPeak.nccl_busbw_gbps`); met when it is at least (1 - tolerance)
of it (above it counts as met: NVLS all_reduce can pass the Ring figure). `latency_target(result, max_us=15,
max_bytes=64 KiB)`: the slowest CUDA-graph all_reduce at decode sizes against max_us. Each returns a `Target`
whose `met` is None, with the reason in `note`, where it cannot be judged: a CPU run, a card with no figure, a
sweep that did not reach the sizes, graphs not applicable.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.comm.config import DECODE_MAX_BYTES
from lab.comm.links import LinkPeak
from lab.comm.results import SweepResult
from lab.comm.sizes import format_size

LARGE_MIN_BYTES = 256 << 20  # the issue's "at >= 256 MiB"


@dataclass(frozen=True)
class Target:
    name: str
    measured: float | None
    reference: float | None
    met: bool | None  # None: cannot be judged here, `note` says why
    note: str


def busbw_target(result: SweepResult, link: LinkPeak | None, min_bytes: int = LARGE_MIN_BYTES,
                 tolerance: float = 0.15) -> Target:
    name = f"all_reduce busbw >= {format_size(min_bytes)} within {tolerance:.0%} of the link's NCCL figure"
    rows = [r for r in result.rows_of("all_reduce") if r.size_bytes >= min_bytes]
    measured = max((r.busbw_gbps for r in rows), default=None)
    if result.backend != "nccl":
        return Target(name, measured, None, None, f"{result.backend_label}: no NVLink, the target is for NCCL on GPUs")
    if link is None or link.nccl_busbw_gbps is None:
        return Target(name, measured, None, None, f"no NCCL figure for {result.device}'s link in lab.comm.links")
    if measured is None:
        return Target(name, None, link.nccl_busbw_gbps, None, f"the sweep stopped below {format_size(min_bytes)}")
    reference = link.nccl_busbw_gbps
    return Target(name, measured, reference, measured >= (1 - tolerance) * reference,
                  f"{measured:.0f} GB/s vs {reference:.0f} GB/s ({link.name}; {link.source})")


def latency_target(result: SweepResult, max_us: float = 15.0, max_bytes: int = DECODE_MAX_BYTES) -> Target:
    name = f"all_reduce <= {format_size(max_bytes)} with CUDA graphs <= {max_us:g} us"
    rows = [r for r in result.latency if r.size_bytes <= max_bytes]
    if result.backend != "nccl" or any(r.graph_us is None for r in rows):
        return Target(name, None, max_us, None, f"{result.backend_label}: {result.graphs}")
    if not rows:
        return Target(name, None, max_us, None, "no latency size at or below the decode size was run")
    worst = max(r.graph_us for r in rows if r.graph_us is not None)
    return Target(name, worst, max_us, worst <= max_us, f"slowest decode-size all_reduce {worst:.1f} us")


def issue_targets(result: SweepResult, link: LinkPeak | None) -> list[tuple[str, Target]]:
    """Both targets under the keys the records use (`target_<key>_measured`, `target_<key>_met`)."""
    return [("busbw", busbw_target(result, link)), ("decode_latency", latency_target(result))]
