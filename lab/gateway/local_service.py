"""A whole local service for experiments: one real `lab serve` replica behind one real `lab gateway`.

Contract: `LocalService(LocalServiceConfig(...))` is a context manager. On `start()` (called by
`__enter__`) it starts the replica (`python -m lab serve --port P <replica_args>`, or
`replica_command`) on a free port of 127.0.0.1 and waits, at most `ready_timeout_s`, for its `GET /ready`; then writes the gateway config
(`gateway_config`, a mapping in the YAML schema of `deploy/gateway.example.yaml`, with `replicas`
filled in to point at that replica) to `<log_dir>/gateway.yaml`, starts `python -m lab gateway` on
another free port and waits for its `GET /ready`. A process that exits before it is ready, or a wait
that runs out, raises `LabError` with the log tails; everything already started is stopped first.
`close()` (called by `__exit__`, also on error) sends SIGTERM to both (the replica drains), then
SIGKILL after `stop_timeout_s`; it stops only the processes this object started (`pids`).
Process management is `lab.scale.local_pool.LocalPool`'s (one pool per process kind).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.errors import LabError
from lab.scale.local_pool import LocalPool, LocalPoolConfig

REPLICA_NAME = "replica-0"
REPLICA_VERSION = "v1"


@dataclass(frozen=True)
class LocalServiceConfig:
    gateway_config: Mapping[str, Any]  # tiers, keys, queue, ...: everything but `replicas`
    replica_args: tuple[str, ...] = ("--model", "tiny")  # extra `lab serve` flags
    # Another upstream instead of `lab serve` (e.g. `lab.gateway.latency_upstream`): a command whose
    # `{port}` is replaced by the chosen port; it must answer GET /ready with 200 when ready.
    replica_command: tuple[str, ...] | None = None
    ready_timeout_s: float = 180.0  # per process: the replica loads its model first
    stop_timeout_s: float = 30.0  # SIGTERM -> SIGKILL
    log_dir: Path | None = None  # default: a temporary folder
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if "replicas" in self.gateway_config:
            raise LabError("LocalServiceConfig.gateway_config: leave `replicas` out; the service fills it in")
        if any(arg in ("--port", "--host") for arg in self.replica_args):
            raise LabError("LocalServiceConfig.replica_args: the service chooses --host and --port")
        if self.replica_command is not None and not any("{port}" in part for part in self.replica_command):
            raise LabError("LocalServiceConfig.replica_command must contain {port}")


@dataclass
class LocalService:
    config: LocalServiceConfig
    log_dir: Path = field(init=False)
    replica_url: str = field(init=False, default="")
    gateway_url: str = field(init=False, default="")
    _pools: list[LocalPool] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="lab-local-service-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Every process this service started (replica first), for audits and tests."""
        return [pid for pool in self._pools for pid in pool.started_pids]

    def _launch(self, command: tuple[str, ...], log_name: str) -> str:
        pool = LocalPool(LocalPoolConfig(command=command, stop_timeout_s=self.config.stop_timeout_s,
                                         log_dir=self.log_dir / log_name))
        self._pools.append(pool)
        pool.scale_to(1)
        (url,) = pool.wait_ready(1, timeout_s=self.config.ready_timeout_s)
        return url

    def start(self) -> LocalService:
        if self._pools:
            raise LabError("this LocalService was started already; make a new one")
        python = (sys.executable, "-m", "lab")
        try:
            self.replica_url = self._launch(self.config.replica_command or (
                *python, "serve", "--host", "127.0.0.1", "--port", "{port}", "--log-level", self.config.log_level,
                *self.config.replica_args), "replica")
            config_path = self.log_dir / "gateway.yaml"
            gateway_config = {**self.config.gateway_config,
                              "replicas": [{"url": self.replica_url, "version": REPLICA_VERSION, "name": REPLICA_NAME}]}
            config_path.write_text(yaml.safe_dump(gateway_config, sort_keys=False), encoding="utf-8")
            self.gateway_url = self._launch(
                (*python, "gateway", "--config", str(config_path), "--host", "127.0.0.1", "--port", "{port}",
                 "--log-level", self.config.log_level), "gateway")
        except BaseException:
            self.close()  # never leave half a service running
            raise
        return self

    def close(self) -> None:
        # Gateway first: it stops taking requests before its replica drains.
        for pool in reversed(self._pools):
            pool.close()
