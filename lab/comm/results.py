"""What a sweep measured, as typed records that cross from the torchrun workers to the launcher (torch-free).

Contract: rank 0 of the workers writes `SweepResult.to_dict()` as JSON; the launcher reads it back with
`SweepResult.from_dict`. A `SweepRow` is one collective at one size (nccl-tests' columns: size, count, time,
algbw, busbw, #wrong), a `LatencyRow` one small all_reduce timed eagerly and, on NCCL, replayed from a CUDA graph
(`graph_us` None where graphs do not apply, and `graphs` says why). `raise_if_wrong()` fails a sweep whose
checked results were wrong.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lab.errors import LabError


@dataclass(frozen=True)
class SweepRow:
    collective: str
    size_bytes: int  # nccl-tests' S (lab.comm.bandwidth)
    count: int  # elements of one rank's input buffer
    time_us: float  # mean time of one operation, averaged over ranks
    algbw_gbps: float
    busbw_gbps: float
    wrong: int  # elements that differed from the expected result in the check run, summed over ranks
    first_output: float  # rank 0's first output element in the check run (all_reduce: 1 + 2 + ... + n)


@dataclass(frozen=True)
class LatencyRow:
    size_bytes: int
    eager_us: float  # one all_reduce launched on its own, mean of the timed iterations
    graph_us: float | None  # one all_reduce of a CUDA graph of graph_ops of them; None: not applicable


@dataclass(frozen=True)
class SweepResult:
    backend: str
    backend_label: str  # "nccl (NVIDIA H100 80GB HBM3)" or "gloo (CPU)"
    device: str  # the GPU name of rank 0, or "cpu"
    nranks: int
    dtype: str
    rows: tuple[SweepRow, ...]
    latency: tuple[LatencyRow, ...]
    graphs: str  # "captured" or why not
    nccl_env: Mapping[str, str]  # every NCCL_* variable the workers saw (the variant's and the machine's)
    versions: Mapping[str, str]  # torch, and NCCL when the backend is nccl

    def rows_of(self, collective: str) -> tuple[SweepRow, ...]:
        return tuple(r for r in self.rows if r.collective == collective)

    def raise_if_wrong(self) -> None:
        """`LabError` naming every collective and size whose checked result was wrong (nccl-tests' #wrong > 0)."""
        wrong = [f"{r.collective} at {r.size_bytes} B ({r.wrong} elements)" for r in self.rows if r.wrong]
        if wrong:
            raise LabError(f"{self.backend_label}: wrong results in " + ", ".join(wrong))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepResult:
        return cls(**{**data, "rows": tuple(SweepRow(**r) for r in data["rows"]),
                      "latency": tuple(LatencyRow(**r) for r in data["latency"]),
                      "nccl_env": dict(data["nccl_env"]), "versions": dict(data["versions"])})
