"""Hand-made sweep results for the tests that check arithmetic on them (no process is started)."""
from __future__ import annotations

from lab.comm.bandwidth import algbw_gbps, busbw_gbps
from lab.comm.results import LatencyRow, SweepResult, SweepRow


def row(collective: str, size_bytes: int, time_us: float, nranks: int = 2, wrong: int = 0) -> SweepRow:
    seconds = time_us * 1e-6
    return SweepRow(collective, size_bytes, size_bytes // 4, time_us, algbw_gbps(size_bytes, seconds),
                    busbw_gbps(collective, size_bytes, seconds, nranks), wrong, 3.0)


def result(rows: list[SweepRow], backend: str = "nccl", device: str = "NVIDIA H100 80GB HBM3",
           latency: tuple[LatencyRow, ...] = ()) -> SweepResult:
    label = f"nccl ({device})" if backend == "nccl" else "gloo (CPU)"
    graphs = "captured" if backend == "nccl" else "not applicable: graphs capture GPU kernels"
    return SweepResult(backend, label, device if backend == "nccl" else "cpu", 2, "float32", tuple(rows), latency,
                       graphs, {}, {"torch": "test"})
