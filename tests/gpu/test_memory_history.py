"""`AllocationHistory` parsing and booking events to phases, on a hand-made `torch.cuda.memory._snapshot()` dict."""

from __future__ import annotations

import pytest
import torch

from lab.errors import LabError
from lab.gpu.memory import MemorySnapshot
from lab.gpu.memory_history import AllocationHistory, PhaseEvents, events_by_phase, record_history
from lab.gpu.memory_timeline import PhaseWindow

MiB = 1 << 20
ZERO = MemorySnapshot(0, 0, 0, 0, 0, 0, 0, 0)


def entry(time_us: int, action: str, size: int) -> dict:
    return {"action": action, "addr": 0, "size": size, "stream": 0, "frames": [], "time_us": time_us}


DEVICE_0 = [
    entry(5, "alloc", 999),  # before any phase
    entry(10, "segment_alloc", 2 * MiB), entry(11, "alloc", MiB), entry(12, "alloc", 512),  # load: 10..20
    entry(25, "free_requested", 512), entry(26, "free_completed", 512),  # kv_allocation: 21..30
    entry(27, "segment_map", 4 * MiB), entry(28, "oom", 8 * MiB),
    entry(40, "segment_free", 2 * MiB),  # after every phase
]
SNAPSHOT = {"segments": [], "device_traces": [DEVICE_0, [entry(11, "alloc", 7)]]}
WINDOWS = (PhaseWindow("load", 10, 20, ZERO, ZERO), PhaseWindow("kv_allocation", 21, 30, ZERO, ZERO))


def test_events_are_booked_to_the_phase_whose_window_holds_them() -> None:
    table = events_by_phase(AllocationHistory.from_snapshot(SNAPSHOT, 0), WINDOWS)
    load, kv = table.phases
    assert load == PhaseEvents("load", allocs=2, alloc_bytes=MiB + 512, segment_allocs=1, segment_alloc_bytes=2 * MiB)
    # free_completed is kept in the history but counted nowhere: the bytes left the allocated level at free_requested
    assert kv == PhaseEvents("kv_allocation", frees=1, freed_bytes=512, segment_allocs=1,
                             segment_alloc_bytes=4 * MiB, ooms=1)
    assert table.outside == PhaseEvents(None, allocs=1, alloc_bytes=999, segment_frees=1, segment_free_bytes=2 * MiB)


def test_only_the_named_device_is_read() -> None:
    history = AllocationHistory.from_snapshot(SNAPSHOT, 1)
    assert [(e.action, e.size_bytes, e.time_us) for e in history.events] == [("alloc", 7, 11)]


def test_level_curves_count_from_the_first_recorded_event() -> None:
    allocated, reserved = AllocationHistory.from_snapshot(SNAPSHOT, 0).level_curves()
    assert allocated == [(5, 999), (11, 999 + MiB), (12, 999 + MiB + 512), (25, 999 + MiB)]
    assert reserved == [(10, 2 * MiB), (27, 6 * MiB), (40, 4 * MiB)]


def test_a_full_ring_says_it_may_have_dropped_events() -> None:
    assert AllocationHistory.from_snapshot(SNAPSHOT, 0, max_entries=len(DEVICE_0)).wrapped
    assert not AllocationHistory.from_snapshot(SNAPSHOT, 0, max_entries=1000).wrapped
    assert not AllocationHistory.from_snapshot(SNAPSHOT, 0).wrapped


def test_a_phase_with_no_event_still_has_its_row() -> None:
    windows = (*WINDOWS, PhaseWindow("graph_capture", 31, 35, ZERO, ZERO))
    table = events_by_phase(AllocationHistory.from_snapshot(SNAPSHOT, 0), windows)
    assert table.phases[-1] == PhaseEvents("graph_capture")


@pytest.mark.parametrize("snapshot, device, problem", [
    ({"segments": []}, 0, "device_traces"),
    (SNAPSHOT, 2, "traces for 2 device"),
    ({"device_traces": [[{"size": 1}]]}, 0, "no 'action'"),
])
def test_a_malformed_snapshot_is_named(snapshot: dict, device: int, problem: str) -> None:
    with pytest.raises(LabError, match=problem):
        AllocationHistory.from_snapshot(snapshot, device)


def test_events_without_time_cannot_be_booked() -> None:
    untimed = {"device_traces": [[{"action": "alloc", "size": 1}]]}
    with pytest.raises(LabError, match="no time_us"):
        events_by_phase(AllocationHistory.from_snapshot(untimed, 0), WINDOWS)


def test_recording_needs_a_positive_ring() -> None:
    with pytest.raises(LabError, match="max_entries must be > 0"), record_history(max_entries=0):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_recording_on_cpu_says_cuda_is_needed() -> None:
    with pytest.raises(LabError, match="need a CUDA device"), record_history():
        pass
