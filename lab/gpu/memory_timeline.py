"""`MemoryTimeline`: allocator snapshots at the boundaries of an engine run's phases, and a per-phase table.

    timeline = MemoryTimeline(CudaMemoryProbe("cuda:0"))     # lab.gpu.memory
    with timeline.phase("load"):
        model = load(...)
    with timeline.phase("kv_allocation"):
        kv = allocate_kv_cache(...)
    timeline.table()      # one PhaseMemory per phase name, in first-entry order

Contract: a phase reads one snapshot when it starts and one when it ends (also when its body raises, so the
phase that hit an OOM shows it), after resetting the allocator's peak counters at its start, so the end
snapshot's peak is the peak *within* the phase. Resetting the peaks is a process-wide side effect: no phase
boundary may fall inside another measurement of `torch.cuda.max_memory_allocated` (the engine's
kv_profile resets and reads its own peak inside one phase, which is fine). Phases never nest (LabError), like
`lab.engine.startup.StartupPhases`, whose `phase(name)` has the same shape, so the engine constructor can feed
both with `with phases.phase(name), timeline.phase(name):`. A phase entered twice (decode, step after step)
is one row: its deltas, retries and OOMs add up, its peak is the highest, its level is the last end's.
Each window also keeps its wall-clock bounds (microseconds since the Unix epoch) so allocation events from
`lab.gpu.memory_history` can be booked to phases. Torch-free: the probe does the reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from lab.errors import LabError
from lab.gpu.memory import MemorySnapshot

# The phases of one engine run as issue 16 names them, in the order they happen.
ENGINE_RUN_PHASES = ("load", "kv_allocation", "graph_capture", "prefill", "decode")


class MemoryProbe(Protocol):
    def read(self) -> MemorySnapshot: ...

    def reset_peak(self) -> None: ...


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class PhaseWindow:
    """One entry into a phase: its bounds and the snapshots at both ends."""

    name: str
    start_us: int  # microseconds since the Unix epoch
    end_us: int
    start: MemorySnapshot
    end: MemorySnapshot


@dataclass(frozen=True)
class PhaseMemory:
    """One row of the per-phase table (all entries of one phase name together)."""

    phase: str
    entries: int
    allocated_bytes: int  # at the end of the last entry
    reserved_bytes: int
    allocated_delta_bytes: int  # sum over entries of (end - start): what the phase kept
    reserved_delta_bytes: int  # what the phase added to the cache (negative: it emptied some)
    peak_allocated_bytes: int  # the highest within any entry
    peak_reserved_bytes: int
    alloc_retries: int  # during the phase: cache flushes forced by a failed cudaMalloc
    ooms: int
    inactive_split_fraction: float | None  # at the end of the last entry (see lab.gpu.memory)
    free_block_fragmentation: float | None


class MemoryTimeline:
    def __init__(self, probe: MemoryProbe, clock_us: Callable[[], int] = wall_clock_us) -> None:
        self._probe = probe
        self._clock_us = clock_us
        self._windows: list[PhaseWindow] = []
        self._open: str | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not name:
            raise LabError("a memory phase needs a name, e.g. one of " + ", ".join(ENGINE_RUN_PHASES))
        if self._open is not None:
            raise LabError(f"memory phase {name!r} started inside phase {self._open!r}; phases do not nest")
        self._open = name
        try:
            self._probe.reset_peak()
            start_us, start = self._clock_us(), self._probe.read()
            try:
                yield
            finally:
                end = self._probe.read()
                self._windows.append(PhaseWindow(name, start_us, self._clock_us(), start, end))
        finally:
            self._open = None

    @property
    def windows(self) -> tuple[PhaseWindow, ...]:
        return tuple(self._windows)

    def table(self) -> list[PhaseMemory]:
        return phase_table(self._windows)

    def as_metrics(self) -> dict[str, float]:
        """`<phase>.<column>` floats for lab.track; an undefined fraction (None) is left out."""
        metrics: dict[str, float] = {}
        for row in self.table():
            for column, value in vars(row).items():
                if column != "phase" and value is not None:
                    metrics[f"{row.phase}.{column}"] = float(value)
        return metrics


def phase_table(windows: list[PhaseWindow] | tuple[PhaseWindow, ...]) -> list[PhaseMemory]:
    """Merge windows by phase name, in the order each name first appears."""
    grouped: dict[str, list[PhaseWindow]] = {}
    for window in windows:
        grouped.setdefault(window.name, []).append(window)
    rows = []
    for name, group in grouped.items():
        last = group[-1].end
        rows.append(PhaseMemory(
            phase=name,
            entries=len(group),
            allocated_bytes=last.allocated_bytes,
            reserved_bytes=last.reserved_bytes,
            allocated_delta_bytes=sum(w.end.allocated_bytes - w.start.allocated_bytes for w in group),
            reserved_delta_bytes=sum(w.end.reserved_bytes - w.start.reserved_bytes for w in group),
            peak_allocated_bytes=max(w.end.peak_allocated_bytes for w in group),
            peak_reserved_bytes=max(w.end.peak_reserved_bytes for w in group),
            alloc_retries=sum(w.end.alloc_retries - w.start.alloc_retries for w in group),
            ooms=sum(w.end.ooms - w.start.ooms for w in group),
            inactive_split_fraction=last.inactive_split_fraction,
            free_block_fragmentation=last.free_block_fragmentation,
        ))
    return rows
