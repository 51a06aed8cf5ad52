"""What the caching allocator's segment list says about free space: `SegmentSummary.from_segments`.

Contract: `from_segments(segments, device_index)` reads the list that `torch.cuda.memory_snapshot()` returns
(one dict per segment, i.e. per cudaMalloc'd or expandable range: `total_size`, `blocks`, optionally `device`),
keeps the segments of `device_index` (all when None or when a segment names no device), and counts the free
space *inside* reserved segments: the blocks whose `state` is "inactive". A block "active_allocated" is held by
a tensor; "active_pending_free" (the name torch's C++ writes; its Python docs say "active_awaiting_free", both are
accepted) was freed by its tensor but another stream may still use it, so it is not yet reusable and is not
counted as free. Torch-free; a malformed list raises `LabError` naming what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError

BLOCK_STATES = ("active_allocated", "active_pending_free", "active_awaiting_free", "inactive")


@dataclass(frozen=True)
class SegmentSummary:
    segment_count: int
    reserved_bytes: int  # sum of the segments' total_size
    free_bytes: int  # sum of the inactive blocks' sizes
    largest_free_block_bytes: int  # the largest single inactive block: the biggest request served without a new segment
    free_block_count: int
    expandable_segment_count: int  # segments with is_expandable (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)

    @classmethod
    def from_segments(cls, segments: Iterable[Mapping[str, Any]], device_index: int | None = None) -> SegmentSummary:
        count = reserved = free = largest = free_blocks = expandable = 0
        for position, segment in enumerate(segments):
            if not isinstance(segment, Mapping):
                raise LabError(f"memory snapshot segment {position} is a {type(segment).__name__}, not a dict")
            if device_index is not None and "device" in segment and segment["device"] != device_index:
                continue
            for key in ("total_size", "blocks"):
                if key not in segment:
                    raise LabError(f"memory snapshot segment {position} has no {key!r} "
                                   "(expected the list torch.cuda.memory_snapshot() returns)")
            count += 1
            reserved += int(segment["total_size"])
            expandable += bool(segment.get("is_expandable", False))
            for block in segment["blocks"]:
                state, size = _block(block, position)
                if state == "inactive":
                    free += size
                    free_blocks += 1
                    largest = max(largest, size)
        return cls(count, reserved, free, largest, free_blocks, expandable)

    @property
    def free_block_fragmentation(self) -> float | None:
        """1 - largest free block / free bytes in segments: 0 when the free space is one block, towards 1 when
        it is scattered in pieces too small for a large request. None when the segments hold no free byte."""
        if self.free_bytes == 0:
            return None
        return 1.0 - self.largest_free_block_bytes / self.free_bytes


def _block(block: Any, segment_position: int) -> tuple[str, int]:
    if not isinstance(block, Mapping) or "size" not in block or "state" not in block:
        raise LabError(f"a block of memory snapshot segment {segment_position} lacks 'size' or 'state': {block!r}")
    if block["state"] not in BLOCK_STATES:
        raise LabError(f"a block of memory snapshot segment {segment_position} has state {block['state']!r}; "
                       f"known states: {', '.join(BLOCK_STATES)}")
    return block["state"], int(block["size"])
