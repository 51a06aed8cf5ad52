"""`MemoryTimeline` and its per-phase table, fed by a fake probe of hand-made snapshots."""

from __future__ import annotations

import pytest

from lab.errors import LabError
from lab.gpu.memory import MemorySnapshot
from lab.gpu.memory_timeline import MemoryTimeline, PhaseMemory


def snap(allocated: int, reserved: int, peak_allocated: int, peak_reserved: int, retries: int = 0, ooms: int = 0,
         inactive_split: int = 0) -> MemorySnapshot:
    return MemorySnapshot(allocated, reserved, allocated, inactive_split, peak_allocated, peak_reserved, retries, ooms)


class FakeProbe:
    """Returns the given snapshots in order; counts peak resets."""

    def __init__(self, readings: list[MemorySnapshot]) -> None:
        self.readings = list(readings)
        self.resets = 0

    def read(self) -> MemorySnapshot:
        return self.readings.pop(0)

    def reset_peak(self) -> None:
        self.resets += 1


def ticking_clock():
    ticks = iter(range(100, 10_000, 10))
    return lambda: next(ticks)


# (start, end) of each phase entry
LOAD = (snap(0, 0, 0, 0), snap(100, 128, 120, 128))
KV = (snap(100, 128, 100, 128), snap(300, 384, 300, 384, retries=1))
DECODE_1 = (snap(300, 384, 300, 384, retries=1), snap(310, 384, 350, 384, retries=1))
DECODE_2 = (snap(310, 384, 310, 384, retries=1), snap(305, 512, 420, 512, retries=3, inactive_split=64))


def run(probe: FakeProbe) -> MemoryTimeline:
    timeline = MemoryTimeline(probe, clock_us=ticking_clock())
    for name in ("load", "kv_allocation", "decode", "decode"):
        with timeline.phase(name):
            pass
    return timeline


def test_the_table_has_one_row_per_phase_from_hand_made_snapshots() -> None:
    probe = FakeProbe([*LOAD, *KV, *DECODE_1, *DECODE_2])
    load, kv, decode = run(probe).table()
    assert load == PhaseMemory("load", 1, 100, 128, 100, 128, 120, 128, 0, 0, 0.0, None)
    assert kv == PhaseMemory("kv_allocation", 1, 300, 384, 200, 256, 300, 384, 1, 0, 0.0, None)
    # decode, twice: level of the last end; deltas (310-300) + (305-310) = 5 and 0 + 128; peak max(350, 420);
    # retries (1-1) + (3-1) = 2; inactive split at the end 64/512 = 0.125
    assert decode == PhaseMemory("decode", 2, 305, 512, 5, 128, 420, 512, 2, 0, 0.125, None)
    assert probe.resets == 4  # one per entry, before its start reading: the end's peak is the phase's own


def test_windows_keep_wall_clock_bounds_for_the_history() -> None:
    timeline = run(FakeProbe([*LOAD, *KV, *DECODE_1, *DECODE_2]))
    assert [(w.name, w.start_us, w.end_us) for w in timeline.windows] == [
        ("load", 100, 110), ("kv_allocation", 120, 130), ("decode", 140, 150), ("decode", 160, 170)]


def test_metrics_name_phase_and_column_and_leave_undefined_figures_out() -> None:
    metrics = run(FakeProbe([*LOAD, *KV, *DECODE_1, *DECODE_2])).as_metrics()
    assert metrics["decode.peak_allocated_bytes"] == 420.0
    assert metrics["kv_allocation.alloc_retries"] == 1.0
    assert "load.free_block_fragmentation" not in metrics


def test_a_phase_that_raises_still_records_its_end() -> None:
    probe = FakeProbe([snap(0, 0, 0, 0), snap(0, 2048, 4096, 2048, retries=1, ooms=1)])
    timeline = MemoryTimeline(probe, clock_us=ticking_clock())
    with pytest.raises(RuntimeError), timeline.phase("prefill"):
        raise RuntimeError("CUDA out of memory")
    (row,) = timeline.table()
    assert (row.phase, row.ooms, row.alloc_retries, row.peak_allocated_bytes) == ("prefill", 1, 1, 4096)


def test_phases_do_not_nest_and_need_a_name() -> None:
    timeline = MemoryTimeline(FakeProbe([snap(0, 0, 0, 0)] * 4), clock_us=ticking_clock())
    with pytest.raises(LabError, match="do not nest"), timeline.phase("load"), timeline.phase("kv_allocation"):
        pass
    with pytest.raises(LabError, match="needs a name"), timeline.phase(""):
        pass
    with timeline.phase("load"):  # the failed nesting left no phase open
        pass
