"""`MemorySnapshot` and `SegmentSummary` arithmetic on hand-made `memory_stats` / `memory_snapshot` data."""

from __future__ import annotations

import pytest
import torch

from lab.errors import LabError
from lab.gpu.memory import STAT_KEYS, CudaMemoryProbe, MemorySnapshot, snapshot
from lab.gpu.memory_segments import SegmentSummary

MiB = 1 << 20


def stats(**overrides: int) -> dict[str, int]:
    # A cache of 10 MiB in two segments (see SEGMENTS): 5 MiB held by tensors, 1 MiB awaiting another stream,
    # 2 MiB free inside the segment that still holds tensors (inactive split), 2 MiB free in a segment of its own.
    values = {
        "allocated_bytes.all.current": 5 * MiB,
        "reserved_bytes.all.current": 10 * MiB,
        "active_bytes.all.current": 6 * MiB,
        "inactive_split_bytes.all.current": 2 * MiB,
        "allocated_bytes.all.peak": 8 * MiB,
        "reserved_bytes.all.peak": 12 * MiB,
        "num_alloc_retries": 2,
        "num_ooms": 0,
        "allocated_bytes.large_pool.current": 5 * MiB,  # other keys torch returns are ignored
    }
    values.update(overrides)
    return values


def block(mib: int, state: str) -> dict:
    return {"size": mib * MiB, "state": state, "requested_size": mib * MiB, "address": 0, "frames": []}


SEGMENTS = [
    {"device": 0, "total_size": 8 * MiB, "allocated_size": 5 * MiB, "is_expandable": False, "blocks": [
        block(4, "active_allocated"), block(1, "inactive"), block(1, "active_pending_free"),
        block(1, "active_allocated"), block(1, "inactive")]},
    {"device": 0, "total_size": 2 * MiB, "allocated_size": 0, "is_expandable": False,
     "blocks": [block(2, "inactive")]},
    {"device": 1, "total_size": 20 * MiB, "allocated_size": 0, "is_expandable": True,
     "blocks": [block(20, "inactive")]},
]


def test_fractions_from_hand_made_stats() -> None:
    snap = MemorySnapshot.from_stats(stats())
    assert (snap.allocated_bytes, snap.reserved_bytes, snap.active_bytes) == (5 * MiB, 10 * MiB, 6 * MiB)
    peaks_and_counts = (snap.peak_allocated_bytes, snap.peak_reserved_bytes, snap.alloc_retries, snap.ooms)
    assert peaks_and_counts == (8 * MiB, 12 * MiB, 2, 0)
    assert snap.reserved_unused_fraction == pytest.approx(0.5)  # (10 - 5) / 10
    assert snap.inactive_split_fraction == pytest.approx(0.2)  # 2 / 10
    assert snap.segments is None and snap.free_block_fragmentation is None and snap.largest_free_block_bytes is None


def test_segments_of_one_device_give_the_largest_free_block() -> None:
    snap = MemorySnapshot.from_stats(stats(), SEGMENTS, device_index=0)
    # device 0 free blocks: 1 + 1 (segment 0) + 2 (segment 1) = 4 MiB; the pending-free 1 MiB is not free yet
    assert snap.segments == SegmentSummary(segment_count=2, reserved_bytes=10 * MiB, free_bytes=4 * MiB,
                                           largest_free_block_bytes=2 * MiB, free_block_count=3,
                                           expandable_segment_count=0)
    assert snap.largest_free_block_bytes == 2 * MiB
    assert snap.free_block_fragmentation == pytest.approx(0.5)  # 1 - 2 / 4


def test_segments_of_every_device_when_no_device_is_named() -> None:
    summary = SegmentSummary.from_segments(SEGMENTS)
    # free 1 + 1 + 2 + 20 = 24 MiB, largest 20 MiB -> 1 - 20/24 = 1/6
    assert (summary.segment_count, summary.free_bytes, summary.expandable_segment_count) == (3, 24 * MiB, 1)
    assert summary.free_block_fragmentation == pytest.approx(1 / 6)


def test_one_free_block_is_no_fragmentation_and_no_free_space_is_undefined() -> None:
    blocks = [block(1, "active_allocated"), block(3, "inactive")]
    one = SegmentSummary.from_segments([{"total_size": 4 * MiB, "blocks": blocks}])
    assert one.free_block_fragmentation == 0.0
    full = SegmentSummary.from_segments([{"total_size": 4 * MiB, "blocks": [block(4, "active_allocated")]}])
    assert full.free_block_fragmentation is None


def test_an_empty_cache_states_no_fraction_and_its_metrics_leave_them_out() -> None:
    zero = {key: 0 for key in STAT_KEYS.values()}
    snap = MemorySnapshot.from_stats(zero)
    assert snap.reserved_unused_fraction is None and snap.inactive_split_fraction is None
    metrics = snap.as_metrics(prefix="load.")
    assert metrics["load.reserved_bytes"] == 0.0
    assert "load.reserved_unused_fraction" not in metrics


def test_metrics_carry_units_and_every_defined_figure() -> None:
    metrics = MemorySnapshot.from_stats(stats(), SEGMENTS, 0).as_metrics()
    assert metrics["allocated_bytes"] == 5 * MiB
    assert metrics["alloc_retries"] == 2.0
    assert metrics["inactive_split_fraction"] == pytest.approx(0.2)
    assert metrics["free_block_fragmentation"] == pytest.approx(0.5)
    assert metrics["largest_free_block_bytes"] == 2 * MiB


def test_a_snapshot_survives_its_json_form() -> None:
    snap = MemorySnapshot.from_stats(stats(), SEGMENTS, 0)
    assert MemorySnapshot.from_dict(snap.to_dict()) == snap


def test_a_missing_key_is_named() -> None:
    incomplete = stats()
    del incomplete["inactive_split_bytes.all.current"], incomplete["num_ooms"]
    with pytest.raises(LabError, match="inactive_split_bytes.all.current, num_ooms"):
        MemorySnapshot.from_stats(incomplete)


def test_empty_stats_say_cuda_was_not_initialised() -> None:
    with pytest.raises(LabError, match="not initialised"):
        MemorySnapshot.from_stats({})


def test_negative_stats_are_refused() -> None:
    with pytest.raises(LabError, match="ooms"):
        MemorySnapshot.from_stats(stats(num_ooms=-1))


@pytest.mark.parametrize("segments, problem", [
    ([{"blocks": []}], "total_size"),
    ([{"total_size": 1}], "blocks"),
    ([{"total_size": 1, "blocks": [{"size": 1}]}], "'size' or 'state'"),
    ([{"total_size": 1, "blocks": [{"size": 1, "state": "gone"}]}], "state 'gone'"),
    (["not a dict"], "not a dict"),
])
def test_a_malformed_segment_list_is_named(segments: list, problem: str) -> None:
    with pytest.raises(LabError, match=problem):
        SegmentSummary.from_segments(segments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_live_reading_on_cpu_says_cuda_is_needed() -> None:
    with pytest.raises(LabError, match="need a CUDA device"):
        snapshot()
    with pytest.raises(LabError, match="need a CUDA device"):
        CudaMemoryProbe("cuda:0")
