"""What one collective sweep runs: `SweepConfig`, frozen and validated at construction (torch-free).

Contract: every field has the nccl-tests default where nccl-tests has one (8 B to 1 GiB is ours: the issue's
range; factor 2, 5 warm-up and 20 timed iterations, float32). A bad value raises `LabError` naming it: an
inverted size range, an unknown collective, dtype or backend, iteration counts below 1. `sizes()` is the
requested geometric range; `to_dict`/`from_dict` carry the config to the torchrun workers as JSON.
`resolve_backend("auto")` picks nccl on a machine with a CUDA GPU, else gloo.
`backend_label(backend, device)` is the one place the label a record and a plot show is made: a CPU run says
"gloo (CPU)" so nobody reads it as an NCCL number.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from lab.comm.bandwidth import COLLECTIVES, check_collective
from lab.comm.sizes import message_sizes, parse_size
from lab.errors import LabError

BACKENDS = ("nccl", "gloo")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int32": 4, "int8": 1}
# A decode step's all-reduce is batch x hidden x 2 B (bf16): 56 KiB at batch 8 for a 7B model (hidden 3584).
DECODE_MAX_BYTES = 64 << 10


@dataclass(frozen=True)
class SweepConfig:
    backend: str = "nccl"  # nccl (one GPU per process) or gloo (CPU processes: the same code, for tests and CI)
    collectives: tuple[str, ...] = COLLECTIVES
    min_bytes: int = 8
    max_bytes: int = 1 << 30
    factor: int = 2  # each size is the previous one times this
    dtype: str = "float32"
    warmup_iters: int = 5  # untimed operations per size, before the timed ones
    iters: int = 20  # timed operations per size; time per op is their mean, averaged over ranks as nccl-tests does
    latency_max_bytes: int = DECODE_MAX_BYTES  # all_reduce latency, eager and CUDA graph, up to this size
    graph_ops: int = 20  # all_reduces captured in one CUDA graph (nccl only)
    graph_replays: int = 10  # timed replays of that graph

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LabError(f"unknown backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}")
        object.__setattr__(self, "collectives", tuple(self.collectives))
        if not self.collectives:
            raise LabError(f"no collective to run; valid collectives: {', '.join(COLLECTIVES)}")
        for name in self.collectives:
            check_collective(name)
        if self.dtype not in DTYPE_BYTES:
            raise LabError(f"unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPE_BYTES)}")
        for name in ("min_bytes", "max_bytes", "latency_max_bytes"):
            object.__setattr__(self, name, parse_size(getattr(self, name)))
        message_sizes(self.min_bytes, self.max_bytes, self.factor)  # raises on an inverted range or factor < 2
        for name in ("iters", "graph_ops", "graph_replays"):
            if getattr(self, name) < 1:
                raise LabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_iters < 0:
            raise LabError(f"warmup_iters must be 0 or more, got {self.warmup_iters}")

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def sizes(self) -> tuple[int, ...]:
        return message_sizes(self.min_bytes, self.max_bytes, self.factor)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "collectives": list(self.collectives)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError(f"unknown sweep setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**{**data, **({"collectives": tuple(data["collectives"])} if "collectives" in data else {})})


def resolve_backend(choice: str) -> str:
    """"auto" -> nccl when a CUDA GPU is present, else gloo; "nccl" and "gloo" as given."""
    if choice == "auto":
        from lab.gpu.nvml import cuda_gpu_present

        return "nccl" if cuda_gpu_present() else "gloo"
    if choice not in BACKENDS:
        raise LabError(f"unknown backend {choice!r}; valid backends: auto, {', '.join(BACKENDS)}")
    return choice


def backend_label(backend: str, device: str) -> str:
    return f"nccl ({device})" if backend == "nccl" else "gloo (CPU)"
