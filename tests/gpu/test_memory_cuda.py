"""`lab.gpu.memory*` against the live CUDA caching allocator: tensors of known sizes must show in the numbers.

Skipped without CUDA. Sizes are multiples of 2 MiB, so the allocator's rounding (512 bytes; large-pool
segments of 2 MiB multiples) adds nothing and allocated bytes move by exactly the tensor's size.
"""

from __future__ import annotations

import os

import pytest
import torch

from lab.gpu.memory import CudaMemoryProbe, snapshot
from lab.gpu.memory_compare import compare_allocators
from lab.gpu.memory_history import events_by_phase, record_history
from lab.gpu.memory_timeline import MemoryTimeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MiB = 1 << 20
DEVICE = "cuda:0"


def mib_tensor(mib: int) -> torch.Tensor:
    return torch.empty(mib * MiB, dtype=torch.uint8, device=DEVICE)


def kv_like_run(timeline: MemoryTimeline) -> None:
    """A small engine-shaped run for the comparison: weights, a KV block, then many ragged temporaries."""
    with timeline.phase("load"):
        weights = mib_tensor(64)
    with timeline.phase("kv_allocation"):
        kv = mib_tensor(128)
    with timeline.phase("decode"):
        # 3 MiB and 5 MiB temporaries share 20 MiB segments; freeing every other leaves split free blocks
        kept = [mib_tensor(3 if i % 2 else 5) for i in range(24)]
        del kept[::2]
    del weights, kv


def test_a_tensor_moves_allocated_and_reserved_by_its_size() -> None:
    torch.cuda.synchronize()
    before = snapshot(DEVICE)
    x = mib_tensor(64)
    after = snapshot(DEVICE)
    assert after.allocated_bytes - before.allocated_bytes == 64 * MiB
    assert after.reserved_bytes >= after.allocated_bytes
    assert after.segments is not None and after.segments.reserved_bytes == after.reserved_bytes
    del x
    freed = snapshot(DEVICE)
    assert freed.allocated_bytes == before.allocated_bytes
    assert freed.largest_free_block_bytes >= 64 * MiB  # the segment stays cached, now one free block


def test_the_timeline_sees_a_phase_keep_and_peak() -> None:
    timeline = MemoryTimeline(CudaMemoryProbe(DEVICE))
    with timeline.phase("kv_allocation"):
        kv = mib_tensor(32)
    with timeline.phase("prefill"):
        scratch = mib_tensor(16)
        del scratch
    kv_row, prefill_row = timeline.table()
    assert kv_row.allocated_delta_bytes == 32 * MiB
    assert prefill_row.allocated_delta_bytes == 0
    assert prefill_row.peak_allocated_bytes >= prefill_row.allocated_bytes + 16 * MiB  # the peak within the phase
    del kv


def test_the_history_books_an_allocation_to_its_phase() -> None:
    timeline = MemoryTimeline(CudaMemoryProbe(DEVICE, with_segments=False))
    with record_history(DEVICE, max_entries=10_000) as recording:
        with timeline.phase("load"):
            x = mib_tensor(8)
        with timeline.phase("decode"):
            del x
    table = events_by_phase(recording.history, timeline.windows)
    load, decode = table.phases
    assert load.allocs == 1 and load.alloc_bytes == 8 * MiB
    assert decode.frees == 1 and decode.freed_bytes == 8 * MiB


@pytest.mark.skipif(bool(os.environ.get("PYTORCH_CUDA_ALLOC_CONF")),
                    reason="this process's allocator is not the default")
def test_freeing_every_other_temporary_leaves_inactive_split_bytes() -> None:
    kept = [mib_tensor(3 if i % 2 else 5) for i in range(24)]
    del kept[::2]
    assert snapshot(DEVICE).inactive_split_bytes > 0
    del kept


def test_both_allocators_run_the_same_tensors() -> None:
    comparison = compare_allocators(kv_like_run, device=DEVICE)
    default, expandable = comparison.run("default"), comparison.run("expandable_segments:True")
    assert expandable.expandable_segments in (True, None)  # None: this torch does not report it
    for run in (default, expandable):
        assert [row.phase for row in run.phases] == ["load", "kv_allocation", "decode"]
        assert run.phases[1].allocated_delta_bytes == 128 * MiB
    # the same tensors, so the same allocated bytes; how much each reserves is what the comparison is for
    assert default.phases[2].allocated_bytes == expandable.phases[2].allocated_bytes
