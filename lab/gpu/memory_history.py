"""The allocator's own event history (`torch.cuda.memory._record_memory_history`), parsed and booked to phases.

    with record_history("cuda:0", max_entries=100_000, dump_path="run.pickle") as recording:
        ... the engine run, its phases marked by a MemoryTimeline ...
    table = events_by_phase(recording.history, timeline.windows)

Contract: `record_history` turns the history on with no stack traces (`context=None`: the events and their
times only, no traceback gathered per allocation, the part PyTorch's docs price at ~2 us), and on exit, also
when the body raises, takes `torch.cuda.memory._snapshot()`, writes it pickled to `dump_path` if given (the file
pytorch.org/memory_viz opens, as `_dump_snapshot` writes it) and turns the history off. The history is a ring
of `max_entries` events: a longer run keeps only its latest events, and `AllocationHistory.wrapped` says so.
`AllocationHistory.from_snapshot` is torch-free. Actions counted (PyTorch's TraceEntry): alloc / free_requested
(a tensor's bytes taken / given back: the allocated level), segment_alloc / segment_free (cudaMalloc /
cudaFree of a segment) and segment_map / segment_unmap (their expandable-segments counterparts: the reserved
level), oom; other actions (free_completed, snapshot) are kept but not counted. Events are booked to a phase
by their `time_us`, which PyTorch converts from the CPU's cycle counter to microseconds since the Unix epoch
(the clock `MemoryTimeline`'s windows use; the conversion is approximate, so an event within microseconds of a
boundary may land beside it); events outside every window land in `EventTable.outside`, never in a guessed phase.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.gpu.memory_timeline import PhaseWindow

ALLOCATED_UP, ALLOCATED_DOWN = "alloc", "free_requested"
RESERVED_UP = ("segment_alloc", "segment_map")
RESERVED_DOWN = ("segment_free", "segment_unmap")
# action -> (PhaseEvents count field, bytes field or None); actions not here are not counted
_COUNTED: dict[str, tuple[str, str | None]] = {
    ALLOCATED_UP: ("allocs", "alloc_bytes"), ALLOCATED_DOWN: ("frees", "freed_bytes"),
    **{action: ("segment_allocs", "segment_alloc_bytes") for action in RESERVED_UP},
    **{action: ("segment_frees", "segment_free_bytes") for action in RESERVED_DOWN},
    "oom": ("ooms", None),  # an oom's size is the request that failed, not bytes that moved
}


@dataclass(frozen=True)
class AllocationEvent:
    action: str
    size_bytes: int
    time_us: int | None  # None when this torch's trace entries carry no time


@dataclass(frozen=True)
class AllocationHistory:
    device_index: int
    events: tuple[AllocationEvent, ...]
    max_entries: int | None = None  # the ring's size when recorded here; None when unknown

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], device_index: int,
                      max_entries: int | None = None) -> AllocationHistory:
        traces = snapshot.get("device_traces") if isinstance(snapshot, Mapping) else None
        if traces is None:
            raise LabError("the memory snapshot has no 'device_traces' (expected torch.cuda.memory._snapshot()'s dict)")
        if not 0 <= device_index < len(traces):
            raise LabError(f"the memory snapshot has traces for {len(traces)} device(s), not for device {device_index}")
        events = []
        for position, entry in enumerate(traces[device_index]):
            if not isinstance(entry, Mapping) or "action" not in entry:
                raise LabError(f"trace entry {position} of device {device_index} has no 'action': {entry!r}")
            time_us = entry.get("time_us")
            events.append(AllocationEvent(entry["action"], int(entry.get("size", 0)),
                                          None if time_us is None else int(time_us)))
        return cls(device_index, tuple(events), max_entries)

    @property
    def wrapped(self) -> bool:
        """True when the ring may have dropped the run's earliest events."""
        return self.max_entries is not None and len(self.events) >= self.max_entries

    def level_curves(self) -> tuple[list[tuple[int | None, int]], list[tuple[int | None, int]]]:
        """(allocated, reserved) as [(time_us, bytes)] after each event that moves them, counted from the level
        at the first recorded event (the bytes held before recording started are not in the history)."""
        allocated, reserved, a, r = [], [], 0, 0
        for event in self.events:
            if event.action in (ALLOCATED_UP, ALLOCATED_DOWN):
                a += event.size_bytes if event.action == ALLOCATED_UP else -event.size_bytes
                allocated.append((event.time_us, a))
            elif event.action in RESERVED_UP or event.action in RESERVED_DOWN:
                r += event.size_bytes if event.action in RESERVED_UP else -event.size_bytes
                reserved.append((event.time_us, r))
        return allocated, reserved


@dataclass(frozen=True)
class PhaseEvents:
    phase: str | None  # None: the events outside every phase window
    allocs: int = 0
    alloc_bytes: int = 0
    frees: int = 0
    freed_bytes: int = 0
    segment_allocs: int = 0  # cudaMalloc calls (or expandable-segment maps): the slow path of an allocation
    segment_alloc_bytes: int = 0
    segment_frees: int = 0
    segment_free_bytes: int = 0
    ooms: int = 0

    def add(self, event: AllocationEvent) -> PhaseEvents:
        if event.action not in _COUNTED:
            return self
        number, size = _COUNTED[event.action]
        changes = {number: getattr(self, number) + 1}
        if size is not None:
            changes[size] = getattr(self, size) + event.size_bytes
        return PhaseEvents(**{**vars(self), **changes})


@dataclass(frozen=True)
class EventTable:
    phases: tuple[PhaseEvents, ...]  # one per phase name, in first-entry order
    outside: PhaseEvents  # events before, between or after the phases


def events_by_phase(history: AllocationHistory, windows: Sequence[PhaseWindow]) -> EventTable:
    rows: dict[str, PhaseEvents] = {}
    for window in windows:
        rows.setdefault(window.name, PhaseEvents(window.name))
    outside = PhaseEvents(None)
    for event in history.events:
        if event.time_us is None:
            raise LabError("this torch's allocation history has no time_us on its events; they cannot be booked "
                           "to phases")
        window = next((w for w in windows if w.start_us <= event.time_us <= w.end_us), None)
        if window is None:
            outside = outside.add(event)
        else:
            rows[window.name] = rows[window.name].add(event)
    return EventTable(tuple(rows.values()), outside)


class HistoryRecording:
    """What `record_history` yields: `history` is set when the block ends."""

    def __init__(self) -> None:
        self.history: AllocationHistory | None = None


@contextmanager
def record_history(device: Any = "cuda", max_entries: int = 100_000,
                   dump_path: str | Path | None = None) -> Iterator[HistoryRecording]:
    if max_entries <= 0:
        raise LabError(f"max_entries must be > 0, got {max_entries}")
    import torch

    from lab.gpu.memory import cuda_device

    resolved = cuda_device(device)
    recording = HistoryRecording()
    torch.cuda.memory._record_memory_history("all", context=None, stacks="python", max_entries=max_entries)
    try:
        yield recording
    finally:
        try:
            raw = torch.cuda.memory._snapshot()
            if dump_path is not None:
                Path(dump_path).write_bytes(pickle.dumps(raw))
        finally:
            torch.cuda.memory._record_memory_history(None)
        recording.history = AllocationHistory.from_snapshot(raw, resolved.index, max_entries)
