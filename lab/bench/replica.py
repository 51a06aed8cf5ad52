"""Start one `lab serve` replica for a benchmark, and stop it afterwards (and only it).

Contract: `ReplicaSpec` says what to serve (`engine` "lab" = our engine, "hf" = the transformers
`generate()` baseline; model, device, context, overrides, extra `lab serve` flags) and
`ReplicaSpec.command()` is the exact `python -m lab serve ...` command line (`{port}` left for the
pool). `serve_replica(spec)` is a context manager: it starts the replica through
`lab.scale.local_pool.LocalPool` (a free port on 127.0.0.1, its own log file, SIGTERM then SIGKILL
on exit), waits until `/ready` answers 200 (or raises `LabError` with the log tail), and yields a
`ServedReplica` with the base URL. A notebook comparing engines runs them one after the other, so
two replicas never share the card.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError

ENGINES = ("lab", "hf")


@dataclass(frozen=True)
class ReplicaSpec:
    engine: str  # "lab" (full power) or "hf" (transformers generate(), the native baseline)
    model: str = "tiny"  # preset name or local checkpoint directory
    device: str = "auto"
    max_model_len: int | None = None
    hf_overrides: dict = field(default_factory=dict)  # config.json overrides, e.g. {"num_hidden_layers": 2}
    hf_batch_size: int | None = None  # engine "hf": requests per static generate() batch
    extra_flags: tuple[str, ...] = ()  # more `lab serve` flags, e.g. ("--num-gpu-blocks", "512")
    served_model_name: str | None = None  # default: the model

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise LabError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.hf_batch_size is not None and self.engine != "hf":
            raise LabError("hf_batch_size applies to engine 'hf' only")
        object.__setattr__(self, "extra_flags", tuple(self.extra_flags))

    def command(self) -> tuple[str, ...]:
        """`python -m lab serve ...` with `{port}` for the pool to fill in."""
        cmd = [sys.executable, "-m", "lab", "serve", "--engine", self.engine, "--model", self.model,
               "--device", self.device, "--port", "{port}"]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.hf_overrides:
            cmd += ["--hf-overrides", json.dumps(self.hf_overrides)]
        if self.hf_batch_size is not None:
            cmd += ["--hf-batch-size", str(self.hf_batch_size)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        return (*cmd, *self.extra_flags)

    def describe(self) -> dict[str, object]:
        return {"engine": self.engine, "model": self.model, "device": self.device,
                "max_model_len": self.max_model_len, "hf_overrides": dict(self.hf_overrides),
                "hf_batch_size": self.hf_batch_size, "extra_flags": list(self.extra_flags)}


@dataclass(frozen=True)
class ServedReplica:
    spec: ReplicaSpec
    url: str  # base URL, e.g. http://127.0.0.1:8123
    ready_after_s: float  # process start to the first 200 from /ready (imports, weights, graphs)
    log_path: Path


@contextmanager
def serve_replica(spec: ReplicaSpec, *, ready_timeout_s: float = 600.0, log_dir: Path | None = None,
                  stop_timeout_s: float = 30.0) -> Iterator[ServedReplica]:
    """See the module docstring."""
    from lab.scale.local_pool import LocalPool, LocalPoolConfig

    config = LocalPoolConfig(command=spec.command(), log_dir=log_dir, stop_timeout_s=stop_timeout_s,
                             env={"PYTHONUNBUFFERED": "1"})
    with LocalPool(config) as pool:
        pool.scale_to(1)
        (url,) = pool.wait_ready(1, timeout_s=ready_timeout_s)
        (info,) = pool.replicas()
        yield ServedReplica(spec, url, info.ready_after_s or 0.0, pool.log_dir / f"{info.name}.log")
