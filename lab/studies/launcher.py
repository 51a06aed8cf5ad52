"""Local services for studies: one `lab serve` replica alone, or behind one real `lab gateway`.

Contract:
- `ReplicaSpec` says what to serve (`engine` "lab" = our engine, "hf" = transformers' `generate()`
  baseline; model, device, context, config overrides, extra `lab serve` flags); `command()` is the
  exact `python -m lab serve ...` command line, `{port}` left for the pool.
- `serve_replica(spec)` is a context manager: it starts the replica on a free port of 127.0.0.1,
  waits until `/ready` answers 200 (or raises `LabError` with the log tail) and yields a
  `ServedReplica` with the base URL. A study comparing engines runs them one after the other, so
  two replicas never share the card.
- `LocalService(LocalServiceConfig(...))` is a context manager: on `start()` it serves the replica
  (`replica`, or another upstream: `replica_command`, a command whose `{port}` is filled in and that
  answers GET /ready), writes the gateway config (`gateway_config`, the YAML schema of
  `deploy/gateway.example.yaml`, with `replicas` filled in to point at the replica) to
  `<log_dir>/gateway.yaml`, starts `python -m lab gateway` on another free port and waits for its
  `/ready`. A process that exits before it is ready, or a wait that runs out, raises `LabError` with
  the log tails; whatever already started is stopped first.
Stopping (on exit, also on error) stops the gateway first, then sends the replica SIGTERM (it drains),
then SIGKILL after `stop_timeout_s`, and touches only the processes started here (`pids`: replica, then
gateway). Process management is `lab.service`'s (`Service`, what `lab up` runs): each process in its own
session, logged to `<log_dir>/<name>.log`, with `<log_dir>/state.json`; a study's service has no
Prometheus and no restarts (a replica that dies mid-study should fail the study, not hide in its numbers).
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.service.spec import ENGINES, GatewaySpec, PrometheusSpec, ReplicaProcess, RestartPolicy, ServiceSpec
from lab.service.spec import lab_serve_command
from lab.service.supervisor import Service

REPLICA_NAME = "replica-0"
REPLICA_VERSION = "v1"
__all__ = ["ENGINES", "LocalService", "LocalServiceConfig", "ReplicaSpec", "ServedReplica", "serve_replica"]


@dataclass(frozen=True)
class ReplicaSpec:
    engine: str = "lab"  # "lab" (full power) or "hf" (transformers generate(), the native baseline)
    model: str = "tiny"  # preset name or local checkpoint directory
    device: str = "auto"
    max_model_len: int | None = None
    hf_overrides: dict = field(default_factory=dict)  # config.json overrides, e.g. {"num_hidden_layers": 2}
    hf_batch_size: int | None = None  # engine "hf": requests per static generate() batch
    extra_flags: tuple[str, ...] = ()  # more `lab serve` flags, e.g. ("--num-gpu-blocks", "512")
    served_model_name: str | None = None  # default: the model
    log_level: str | None = None  # `lab serve --log-level`; None: its default

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise LabError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.hf_batch_size is not None and self.engine != "hf":
            raise LabError("hf_batch_size applies to engine 'hf' only")
        object.__setattr__(self, "extra_flags", tuple(self.extra_flags))
        if any(flag in ("--port", "--host") for flag in self.extra_flags):
            raise LabError("ReplicaSpec.extra_flags: the launcher chooses --host and --port")

    def command(self) -> tuple[str, ...]:
        """`python -m lab serve ...` on 127.0.0.1 with `{port}` for the supervisor to fill in."""
        flags: list[str] = []
        if self.max_model_len is not None:
            flags += ["--max-model-len", str(self.max_model_len)]
        if self.hf_overrides:
            flags += ["--hf-overrides", json.dumps(self.hf_overrides)]
        if self.hf_batch_size is not None:
            flags += ["--hf-batch-size", str(self.hf_batch_size)]
        if self.served_model_name:
            flags += ["--served-model-name", self.served_model_name]
        if self.log_level:
            flags += ["--log-level", self.log_level]
        return lab_serve_command(self.engine, self.model, self.device, (*flags, *self.extra_flags))

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


def _study_service(name: str, command: tuple[str, ...], log_dir: Path, ready_timeout_s: float, stop_timeout_s: float,
                   gateway: GatewaySpec | None) -> ServiceSpec:
    """A service of one replica (and maybe a gateway) for a study: no Prometheus, no restarts."""
    return ServiceSpec(name=name, replicas=(ReplicaProcess(REPLICA_NAME, command, REPLICA_VERSION),),
                       log_dir=log_dir, gateway=gateway, prometheus=PrometheusSpec(enabled=False),
                       restart=RestartPolicy("never"), ready_timeout_s=ready_timeout_s, stop_timeout_s=stop_timeout_s)


@contextmanager
def serve_replica(spec: ReplicaSpec, *, ready_timeout_s: float = 600.0, log_dir: Path | None = None,
                  stop_timeout_s: float = 30.0) -> Iterator[ServedReplica]:
    """See the module docstring."""
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="lab-replica-"))
    with Service(_study_service("replica", spec.command(), log_dir, ready_timeout_s, stop_timeout_s, None)) as service:
        record = service.replica(REPLICA_NAME)
        yield ServedReplica(spec, record.url, record.ready_after_s or 0.0, Path(record.log))


@dataclass(frozen=True)
class LocalServiceConfig:
    gateway_config: Mapping[str, Any]  # tiers, keys, queue, ...: everything but `replicas`
    replica: ReplicaSpec = field(default_factory=lambda: ReplicaSpec(log_level="warning"))
    # Another upstream instead of `lab serve` (e.g. `lab.studies.gateway_latency.upstream`): a command whose
    # `{port}` is replaced by the chosen port; it must answer GET /ready with 200 when ready.
    replica_command: tuple[str, ...] | None = None
    ready_timeout_s: float = 180.0  # per process: the replica loads its model first
    stop_timeout_s: float = 30.0  # SIGTERM -> SIGKILL
    log_dir: Path | None = None  # default: a temporary folder
    log_level: str = "warning"  # the gateway's

    def __post_init__(self) -> None:
        if "replicas" in self.gateway_config:
            raise LabError("LocalServiceConfig.gateway_config: leave `replicas` out; the service fills it in")
        if self.replica_command is not None and not any("{port}" in part for part in self.replica_command):
            raise LabError("LocalServiceConfig.replica_command must contain {port}")


@dataclass
class LocalService:
    config: LocalServiceConfig
    log_dir: Path = field(init=False)
    replica_url: str = field(init=False, default="")
    gateway_url: str = field(init=False, default="")
    _service: Service = field(init=False)

    def __post_init__(self) -> None:
        self.log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="lab-local-service-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        gateway = GatewaySpec(config=dict(self.config.gateway_config), log_level=self.config.log_level)
        command = self.config.replica_command or self.config.replica.command()
        self._service = Service(_study_service("local-service", command, self.log_dir, self.config.ready_timeout_s,
                                               self.config.stop_timeout_s, gateway))

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Every process this service started (replica first), for audits and tests."""
        return self._service.pids

    def start(self) -> LocalService:
        if self._service.status != "new":
            raise LabError("this LocalService was started already; make a new one")
        self._service.start()  # on failure it stops what it started before raising
        self.replica_url = self._service.replica(REPLICA_NAME).url
        self.gateway_url = self._service.gateway_url or ""
        return self

    def close(self) -> None:
        self._service.stop()  # gateway first: it stops taking requests before its replica drains
