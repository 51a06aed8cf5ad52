"""What a chaos-drill study runs: the service it starts and the drills it puts through it.

Contract: `DrillStudyConfig` is frozen and checked at construction (a `LabError` names the field). It says
what the replicas serve (`model`, `device`, `hf_overrides`, `serve_flags`; or `replica_command`, any
OpenAI-compatible server whose command holds `{port}`, e.g. for a test without an engine), how many
(`replicas`, 2 by default: the issue's targets are for two), how the gateway probes them
(`probe_interval_s`, `probe_timeout_s`, `failure_threshold`: short enough for a drill), how the gateway
reaches the target replica (`network`: "auto" picks what `lab.chaos.backend.network_fault_backend()` says
works here, "proxy" or "netns"), the client load (`rates_per_s` for the vip and batch tiers,
`max_tokens`), and which drills run, in order (`drills`: experiment names of chaos/, e.g. "kill-replica"),
each with its own load duration (`load_duration_s`, seconds; default `DEFAULT_LOAD_S`; at least
`fault_after_s + fault_duration_s`) and, for link faults, the overload and the flash sale's burst, how long
the fault holds (`fault_duration_s`, starting `fault_after_s` into the load). `experiment_vars(drill)` is
the chaostoolkit configuration the drill's experiment file gets (targets and keys are added by the runner).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.paths import project_root

TIERS = ("vip", "batch")  # the tiers every experiment in chaos/ loads (its keys: vip_key, batch_key)
DEFAULT_LOAD_S = 30.0
NETWORKS = ("auto", "proxy", "netns")


def experiments_dir() -> Path:
    return project_root() / "chaos"


@dataclass(frozen=True)
class DrillStudyConfig:
    drills: tuple[str, ...] = ("kill-replica", "partition-replica")
    model: str = "tiny"
    device: str = "cpu"
    hf_overrides: Mapping[str, object] = field(default_factory=dict)  # e.g. {"num_hidden_layers": 2}
    serve_flags: tuple[str, ...] = ()  # more `lab serve` flags
    replica_command: tuple[str, ...] | None = None  # instead of `lab serve`: any server holding {port} ({host})
    replicas: int = 2
    target: str = "replica-0"  # the replica the replica and link drills hit
    network: str = "auto"
    probe_interval_s: float = 3.0
    probe_timeout_s: float = 2.0
    failure_threshold: int = 3
    rates_per_s: Mapping[str, float] = field(default_factory=lambda: {"vip": 1.0, "batch": 1.0})
    max_tokens: int = 8
    load_duration_s: Mapping[str, float] = field(default_factory=dict)  # drill -> seconds of drill load
    fault_duration_s: float = 10.0  # link faults and the overload hold at least this long
    fault_after_s: float = 3.0  # the drill load runs this long before the fault
    eject_timeout_s: float = 30.0
    recover_timeout_s: float = 120.0
    min_success_rate: float = 0.99  # the steady-state bar, before and after each drill
    max_vip_ttft_p99_ms: float = 2000.0  # the steady-state bar for VIP (the article's target is 500 ms)
    scrape_interval_s: float = 1.0  # Prometheus scrapes and evaluates the drill rules this often
    ready_timeout_s: float = 300.0
    settle_timeout_s: float = 120.0  # between drills: every replica ready and in service again
    engine_iteration_timeout_s: float = 3.0  # `lab serve`: a core silent this long turns /health 503 (hang drills)
    warmup_s: float = 10.0  # unrecorded drill load before the first drill: kernels compiled, shapes seen

    def __post_init__(self) -> None:
        object.__setattr__(self, "drills", tuple(self.drills))
        object.__setattr__(self, "serve_flags", tuple(self.serve_flags))
        for name in ("hf_overrides", "rates_per_s", "load_duration_s"):
            if not isinstance(getattr(self, name), Mapping):
                raise LabError(f"{name}: a mapping (e.g. a dict or YAML map), got {type(getattr(self, name)).__name__} "
                               f"{getattr(self, name)!r}")
        known = {p.stem for p in experiments_dir().glob("*.yaml")} - {"service"}
        unknown = [d for d in self.drills if d not in known]
        if not self.drills or unknown:
            raise LabError(f"drills: unknown {unknown or '(none given)'}; the experiments of chaos/ are {sorted(known)}")
        if set(self.rates_per_s) != set(TIERS) or not all(r > 0 for r in self.rates_per_s.values()):
            raise LabError(f"rates_per_s: a rate > 0 for each of {TIERS}, got {dict(self.rates_per_s)}")
        if not self.warmup_s >= 0:
            raise LabError(f"warmup_s must be >= 0, got {self.warmup_s}")
        if not self.engine_iteration_timeout_s > 0:
            raise LabError(f"engine_iteration_timeout_s must be > 0, got {self.engine_iteration_timeout_s}")
        if self.network not in NETWORKS:
            raise LabError(f"network: one of {NETWORKS}, got {self.network!r}")
        if self.replicas < 2:
            raise LabError("replicas: a drill needs at least 2 (one to fault, one to serve meanwhile)")
        if not 0 < self.probe_timeout_s < self.probe_interval_s:
            raise LabError("probe_timeout_s must be > 0 and below probe_interval_s")
        short = [d for d in self.drills if self.load_s(d) < self.fault_after_s + self.fault_duration_s]
        if short:
            raise LabError(f"load_duration_s of {short}: the drill load must outlast the fault (fault_after_s + "
                           f"fault_duration_s = {self.fault_after_s + self.fault_duration_s:g} s)")
        if self.target not in self.replica_names:
            raise LabError(f"target: one of the replicas {self.replica_names}, got {self.target!r}")
        if self.replica_command is not None and not any("{port}" in p for p in self.replica_command):
            raise LabError("replica_command must contain {port}")

    @property
    def replica_names(self) -> list[str]:
        return [f"replica-{i}" for i in range(self.replicas)]

    def load_s(self, drill: str) -> float:
        return float(self.load_duration_s.get(drill, DEFAULT_LOAD_S))

    def experiment_vars(self, drill: str) -> dict[str, object]:
        """The drill's tunables, as chaostoolkit configuration (names of the experiment files' keys)."""
        return {"replica": self.target, "vip_rate_per_s": float(self.rates_per_s["vip"]),
                "batch_rate_per_s": float(self.rates_per_s["batch"]), "max_tokens": self.max_tokens,
                "fault_after_s": self.fault_after_s, "load_duration_s": self.load_s(drill),
                "fault_duration_s": self.fault_duration_s, "burst_start_s": self.fault_after_s,
                "burst_end_s": self.fault_after_s + self.fault_duration_s, "eject_timeout_s": self.eject_timeout_s,
                "recover_timeout_s": self.recover_timeout_s, "min_success_rate": self.min_success_rate,
                "max_vip_ttft_p99_ms": self.max_vip_ttft_p99_ms,
                # reload-corrupt writes a checkpoint that fits the replicas: their preset and overrides
                "model": self.model, "hf_overrides": json.dumps(dict(self.hf_overrides))}

    def describe(self) -> dict[str, object]:
        return {"drills": list(self.drills), "model": self.model, "device": self.device,
                "hf_overrides": dict(self.hf_overrides), "serve_flags": list(self.serve_flags),
                "replica_command": list(self.replica_command) if self.replica_command else None,
                "replicas": self.replicas, "target": self.target, "network": self.network,
                "probe_interval_s": self.probe_interval_s, "probe_timeout_s": self.probe_timeout_s,
                "failure_threshold": self.failure_threshold, "rates_per_s": dict(self.rates_per_s),
                "max_tokens": self.max_tokens, "load_duration_s": {d: self.load_s(d) for d in self.drills},
                "fault_duration_s": self.fault_duration_s, "fault_after_s": self.fault_after_s,
                "min_success_rate": self.min_success_rate, "max_vip_ttft_p99_ms": self.max_vip_ttft_p99_ms,
                "scrape_interval_s": self.scrape_interval_s,
                "engine_iteration_timeout_s": self.engine_iteration_timeout_s, "warmup_s": self.warmup_s}
