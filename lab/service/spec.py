"""What a local service is made of: frozen records that `lab.service.load` builds from the YAML.

Contract: a `ServiceSpec` names the service, its log folder, its replicas (each a `ReplicaProcess`:
a name, a version, a command whose `{port}` the supervisor fills in, extra environment), the gateway
in front (`GatewaySpec`: its config without `replicas`, which the supervisor fills in; None: no
gateway), Prometheus (`PrometheusSpec`) and the restart policy (`RestartPolicy`). The records hold
only what the user asked for; ports, pids and URLs are chosen at run time and live in
`lab.service.supervisor` and `state.json`. `lab_serve_command(...)` is the one `python -m lab serve`
command line, shared with `lab.studies.launcher`. A replica's `network` says how the gateway reaches it
(`lab.service.network`: "direct", through a fault "proxy", or inside a lab "netns"; a netns replica's
command holds `{host}`, the namespace's address). Constructors check what a Python caller could get
wrong (names, `{port}`, `{host}`, the launcher's own flags) with a `LabError` that names it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.paths import project_root

ENGINES = ("lab", "hf", "hf-cb")  # `lab serve --engine`: ours, transformers' generate() or its continuous batching
NETWORKS = ("direct", "proxy", "netns")  # how the gateway reaches a replica (lab.service.network)
PROXY_SUFFIX = "-proxy"  # a proxied replica's fault proxy is the process `<replica>-proxy`
RESTART_POLICIES = ("on-failure", "never")
RESERVED_NAMES = ("gateway", "prometheus", "supervisor")  # other processes and their log files
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a name is also a file name (<log_dir>/<name>.log)
PYTHON_LAB = (sys.executable, "-m", "lab")
HOST = "127.0.0.1"  # everything the service starts listens on loopback (a netns replica: its private veth)


def lab_serve_command(engine: str, model: str, device: str, flags: tuple[str, ...] = (),
                      host: str = HOST) -> tuple[str, ...]:
    """`python -m lab serve ...` on `host` (127.0.0.1; "{host}" for a netns replica) with `{port}` left for the
    supervisor."""
    if engine not in ENGINES:
        raise LabError(f"engine must be one of {ENGINES}, got {engine!r}")
    if any(flag.split("=")[0] in ("--port", "--host") for flag in flags):
        raise LabError("lab serve flags: leave out --host and --port; the service chooses them "
                       "(127.0.0.1, a free port)")
    return (*PYTHON_LAB, "serve", "--engine", engine, "--model", model, "--device", device,
            "--host", host, "--port", "{port}", *flags)


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LabError(f"{what}: {name!r} is not a name (letters, digits, '_', '.', '-'; it names a log file)")
    return name


@dataclass(frozen=True)
class ReplicaProcess:
    """One replica process: `command` holds `{port}` (`lab_serve_command(...)`, or any OpenAI-compatible server)."""

    name: str
    command: tuple[str, ...]
    version: str = "v1"
    env: Mapping[str, str] = field(default_factory=dict)  # added to the supervisor's environment
    metrics_path: str | None = "/metrics"  # what Prometheus scrapes; None: a server without metrics
    ready_path: str = "/ready"  # 200 when it serves (lab serve, vLLM and SGLang answer /health too)
    network: str = "direct"  # direct | proxy (a fault proxy in front) | netns (inside a lab namespace; root)

    def __post_init__(self) -> None:
        check_name(self.name, "replica name")
        if self.name in RESERVED_NAMES:
            raise LabError(f"replica name {self.name!r} is taken by the service's {self.name}; choose another")
        object.__setattr__(self, "command", tuple(self.command))
        if not any("{port}" in part for part in self.command):
            raise LabError(f"replica {self.name!r}: its command must contain {{port}} (the service picks the port): "
                           f"{' '.join(self.command)}")
        if self.network not in NETWORKS:
            raise LabError(f"replica {self.name!r}: network must be one of {list(NETWORKS)}, got {self.network!r}")
        if self.network == "netns" and not any("{host}" in part for part in self.command):
            raise LabError(f"replica {self.name!r}: a netns replica listens on its namespace's address; its command "
                           f"must contain {{host}}: {' '.join(self.command)}")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in self.env.items()})


@dataclass(frozen=True)
class GatewaySpec:
    config: Mapping[str, Any] = field(default_factory=dict)  # lab gateway's YAML schema, without `replicas`
    port: int | None = None  # None: a free port
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if "replicas" in self.config:
            raise LabError("gateway config: leave `replicas` out; the service fills them in from its replicas")


@dataclass(frozen=True)
class PrometheusSpec:
    enabled: bool = True
    scrape_interval_s: float = 5.0
    evaluation_interval_s: float = 5.0
    rules: Path = field(default_factory=lambda: project_root() / "deploy" / "prometheus" / "rules.yml")
    port: int | None = None  # None: a free port
    binary: str | None = None  # None: `prometheus` on PATH, else /usr/bin/prometheus


@dataclass(frozen=True)
class RestartPolicy:
    """on-failure: a process that exits is started again (same port) after a backoff that doubles with each
    failure in a row, from `backoff_s` up to `max_backoff_s`; a process that fails `max_restarts` times in a
    row without becoming ready is left down (a crash loop). never: it stays down."""

    policy: str = "on-failure"
    max_restarts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.policy not in RESTART_POLICIES:
            raise LabError(f"restart: expected one of {list(RESTART_POLICIES)}, got {self.policy!r}")

    def delay_s(self, failures_in_a_row: int) -> float:
        return min(self.backoff_s * 2 ** max(0, failures_in_a_row - 1), self.max_backoff_s)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    replicas: tuple[ReplicaProcess, ...]
    log_dir: Path | None = None  # None: <project>/runs/up/<name>/
    gateway: GatewaySpec | None = None  # None: replicas only
    prometheus: PrometheusSpec = field(default_factory=PrometheusSpec)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    ready_timeout_s: float = 300.0  # per start: a replica loads its model first
    stop_timeout_s: float = 30.0  # SIGTERM (a replica drains) -> SIGKILL
    source: Path | None = None  # the YAML file it came from, if any

    def __post_init__(self) -> None:
        check_name(self.name, "service name")
        object.__setattr__(self, "replicas", tuple(self.replicas))
        if not self.replicas:
            raise LabError("a service needs at least one replica")
        names = [r.name for r in self.replicas]
        names += [r.name + PROXY_SUFFIX for r in self.replicas if r.network == "proxy"]  # processes too
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LabError(f"replica names must be unique (count: N adds -0, -1, ...; a proxied replica's proxy is "
                           f"<name>{PROXY_SUFFIX}); repeated: {duplicates}")

    @property
    def resolved_log_dir(self) -> Path:
        return self.log_dir or project_root() / "runs" / "up" / self.name
