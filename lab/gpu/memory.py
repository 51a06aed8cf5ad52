"""One reading of PyTorch's CUDA caching allocator: `MemorySnapshot`, with three fragmentation figures.

    snap = snapshot("cuda:0")            # live numbers; on a machine without CUDA: LabError
    snap = MemorySnapshot.from_stats(torch.cuda.memory_stats(0), torch.cuda.memory_snapshot())
    snap.as_metrics()                    # flat floats for lab.track, units in the names

Contract: `from_stats` reads the dict `torch.cuda.memory_stats(device)` returns (the "all" pool, both small and
large) and, optionally, `torch.cuda.memory_snapshot()`'s segment list; a missing key raises `LabError` naming it.
Vocabulary (PyTorch's "CUDA memory management" notes and `memory_stats` docs):
- allocated: bytes held by live tensors (rounded up to the allocator's block sizes);
- reserved: bytes the allocator got from cudaMalloc (its segments), allocated or cached;
- active: allocated plus blocks freed by a tensor but still awaiting use by another stream;
- inactive split: free blocks inside a segment that also holds active blocks, so `empty_cache()` cannot
  give them back ("inactive, non-releasable");
- retries: allocations that failed, flushed the cache (`cudaFree` of every unused segment) and tried again:
  each one is a stall and the sign of a cache near full; OOMs: allocations that still failed.
The fragmentation figures, each None when its denominator is 0 (an empty cache has no fragmentation to state):
- `reserved_unused_fraction` = (reserved - allocated) / reserved: the share of the cache no tensor uses,
  what PyTorch's OOM message hints at ("reserved but unallocated ... try expandable_segments");
- `inactive_split_fraction` = inactive_split / reserved: the share of the cache that is free yet stuck
  in partly used segments, the part only `expandable_segments` (or a different allocation order) gets back;
- `free_block_fragmentation` = 1 - largest free block / free bytes in segments (needs the segment list):
  external fragmentation in the textbook sense, 0 when the free space is one block.
torch is imported only by `snapshot` and `CudaMemoryProbe`, so the arithmetic runs anywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError
from lab.gpu.memory_segments import SegmentSummary

# field -> memory_stats key ("all" = small and large pool together)
STAT_KEYS: dict[str, str] = {
    "allocated_bytes": "allocated_bytes.all.current",
    "reserved_bytes": "reserved_bytes.all.current",
    "active_bytes": "active_bytes.all.current",
    "inactive_split_bytes": "inactive_split_bytes.all.current",
    "peak_allocated_bytes": "allocated_bytes.all.peak",
    "peak_reserved_bytes": "reserved_bytes.all.peak",
    "alloc_retries": "num_alloc_retries",
    "ooms": "num_ooms",
}


@dataclass(frozen=True)
class MemorySnapshot:
    allocated_bytes: int
    reserved_bytes: int
    active_bytes: int
    inactive_split_bytes: int
    peak_allocated_bytes: int  # since the process started or the last torch.cuda.reset_peak_memory_stats
    peak_reserved_bytes: int
    alloc_retries: int  # cumulative, like ooms: a phase's own count is a difference of two snapshots
    ooms: int
    segments: SegmentSummary | None = None  # only when the segment list was given

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], segments: Sequence[Mapping[str, Any]] | None = None,
                   device_index: int | None = None) -> MemorySnapshot:
        if not isinstance(stats, Mapping):
            raise LabError("memory stats must be the dict torch.cuda.memory_stats() returns, "
                           f"got {type(stats).__name__}")
        missing = [key for key in STAT_KEYS.values() if key not in stats]
        if missing:
            hint = " (an empty dict: CUDA was not initialised when it was read)" if not stats else ""
            raise LabError(f"memory stats lack {', '.join(missing)}{hint}")
        values = {field: int(stats[key]) for field, key in STAT_KEYS.items()}
        negative = [field for field, value in values.items() if value < 0]
        if negative:
            raise LabError(f"memory stats cannot be negative: {', '.join(negative)}")
        summary = None if segments is None else SegmentSummary.from_segments(segments, device_index)
        return cls(**values, segments=summary)

    @property
    def reserved_unused_fraction(self) -> float | None:
        return None if self.reserved_bytes == 0 else (self.reserved_bytes - self.allocated_bytes) / self.reserved_bytes

    @property
    def inactive_split_fraction(self) -> float | None:
        return None if self.reserved_bytes == 0 else self.inactive_split_bytes / self.reserved_bytes

    @property
    def largest_free_block_bytes(self) -> int | None:
        return None if self.segments is None else self.segments.largest_free_block_bytes

    @property
    def free_block_fragmentation(self) -> float | None:
        return None if self.segments is None else self.segments.free_block_fragmentation

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics with units in the names; a figure that is undefined (None) is left out, never 0."""
        metrics = {f"{prefix}{field}": float(getattr(self, field)) for field in STAT_KEYS}
        for name in ("reserved_unused_fraction", "inactive_split_fraction", "largest_free_block_bytes",
                     "free_block_fragmentation"):
            value = getattr(self, name)
            if value is not None:
                metrics[f"{prefix}{name}"] = float(value)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (a child process sends its snapshot this way); `from_dict` reverses it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemorySnapshot:
        fields = dict(data)
        if fields.get("segments") is not None:
            fields["segments"] = SegmentSummary(**fields["segments"])
        return cls(**fields)


def cuda_device(device: Any = "cuda"):
    """`device` as a `torch.device` with an index; LabError when CUDA is absent or `device` is not CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise LabError("CUDA memory statistics need a CUDA device; this machine has none "
                       f"(torch {torch.__version__}, torch.cuda.is_available() is False)")
    resolved = torch.device(device)
    if resolved.type != "cuda":
        raise LabError(f"CUDA memory statistics need a CUDA device, got {resolved}")
    return resolved if resolved.index is not None else torch.device("cuda", torch.cuda.current_device())


def snapshot(device: Any = "cuda", with_segments: bool = True) -> MemorySnapshot:
    """The live numbers of `device`'s caching allocator (initialising CUDA if nothing has yet)."""
    import torch

    resolved = cuda_device(device)
    torch.cuda.init()  # before any CUDA work memory_stats() is {}; a fresh allocator reads as zeros instead
    segments = _segments() if with_segments else None
    return MemorySnapshot.from_stats(torch.cuda.memory_stats(resolved), segments, resolved.index)


def _segments() -> list[dict[str, Any]]:
    import torch

    # Newer torch can leave the history ring out of the copy, which keeps a reading cheap while history is on.
    if "include_traces" in inspect.signature(torch.cuda.memory_snapshot).parameters:
        return torch.cuda.memory_snapshot(include_traces=False)
    return torch.cuda.memory_snapshot()


class CudaMemoryProbe:
    """The `MemoryProbe` (lab.gpu.memory_timeline) of one CUDA device: reads snapshots, resets the peaks."""

    def __init__(self, device: Any = "cuda", with_segments: bool = True) -> None:
        self.device = cuda_device(device)
        self.with_segments = with_segments

    def read(self) -> MemorySnapshot:
        return snapshot(self.device, self.with_segments)

    def reset_peak(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
