"""`StartupPhases`: where an engine's start goes, as ordered (phase name -> seconds).

    phases = StartupPhases(device_sync(device))
    with phases.phase("kv_allocation"):
        kv_caches = allocate_kv_cache(...)
    with phases.phase("weight_transfer") as phase:          # a phase with a part carved out of it:
        module.load_weights(phase.carve("weight_read", reads))   # time inside `reads` -> weight_read
    phases.as_dict()  # {"kv_allocation": 0.01, "weight_read": 1.2, "weight_transfer": 0.4}

Contract: phases never overlap, so their sum is at most the wall time they span. A phase entered twice
adds up. `sync` (on CUDA: `torch.cuda.synchronize`) runs at both ends of every phase, inside its time, so a
phase owns the GPU work it queued (every phase ends synced: none of its predecessor's), and the first
sync of a process, which creates the CUDA context, is booked to the phase that makes it. A carved
iterator is timed on the host only (no sync per item: that would change what it measures). The recorder
costs two clock reads and two syncs per phase; it is always on. Torch-free: the engine hands it the sync.
`also(name)`, when given, is a context manager entered around each phase (inside its syncs), so another
recorder sees the same boundaries: `lab.gpu.memory_timeline.MemoryTimeline.phase` books the allocator's
bytes to the engine's own phase names.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


def device_sync(device) -> Callable[[], None] | None:
    """`torch.cuda.synchronize(device)` for a CUDA device, else None (CPU work is done when it returns)."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    return lambda: torch.cuda.synchronize(device)


class _Phase:
    """The handle of a running phase: parts of it can be carved out under names of their own."""

    def __init__(self) -> None:
        self.carved: dict[str, float] = {}

    def carve(self, name: str, items: Iterable) -> Iterator:
        """`items`, unchanged; the host time spent producing them is booked as phase `name`."""
        self.carved.setdefault(name, 0.0)
        iterator = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.carved[name] += time.perf_counter() - start
                return
            self.carved[name] += time.perf_counter() - start
            yield item


class StartupPhases:
    def __init__(self, sync: Callable[[], None] | None = None,
                 also: Callable[[str], AbstractContextManager] | None = None) -> None:
        self._sync = sync
        self._also = also
        self._seconds: dict[str, float] = {}

    def sync(self) -> None:
        if self._sync is not None:
            self._sync()

    @contextmanager
    def phase(self, name: str) -> Iterator[_Phase]:
        handle = _Phase()
        start = time.perf_counter()
        self.sync()  # inside the phase: the first one creates the CUDA context (device_init)
        try:
            with self._also(name) if self._also is not None else nullcontext():
                try:
                    yield handle
                finally:
                    self.sync()  # the GPU work queued in the phase ends before the other recorder reads
        finally:
            elapsed = time.perf_counter() - start
            carved = sum(handle.carved.values())
            for part, seconds in handle.carved.items():  # the carved parts first: they happen inside
                self.add(part, seconds)
            self.add(name, max(elapsed - carved, 0.0))

    def add(self, name: str, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"phase {name!r} cannot take negative time ({seconds} s)")
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return dict(self._seconds)

    @property
    def total_s(self) -> float:
        return sum(self._seconds.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.3f}s" for k, v in self._seconds.items())
        return f"StartupPhases({inner})"
