"""Shared by the service tests: replicas that need no engine, specs built from them, pid checks, bounded waits."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.gateway.auth import hash_key
from lab.service.spec import GatewaySpec, PrometheusSpec, ReplicaProcess, RestartPolicy, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).resolve().parent / "metrics_upstream.py"
DRILL_RULES = ROOT / "deploy" / "prometheus" / "rules-drill.yml"
KEY = "sk-service-test"
# Probes every second, one failure ejects: a hung replica shows within seconds, not the article's 45 s.
GATEWAY = {"keys": [{"name": "t", "tier": "batch", "hash": hash_key(KEY)}],
           "health": {"interval_s": 1, "failure_threshold": 1, "probe_timeout_s": 0.5}}
AUTH = {"Authorization": f"Bearer {KEY}"}
COMPLETION = {"model": "echo", "prompt": "hi", "max_tokens": 1}


def echo_replica(name: str, *extra: str) -> ReplicaProcess:
    return ReplicaProcess(name, (sys.executable, str(UPSTREAM), "--port", "{port}", *extra))


def echo_spec(log_dir: Path, replicas: int = 2, gateway: bool = True, prometheus: bool = True,
              restart: RestartPolicy | None = None, **replica_extra: Any) -> ServiceSpec:
    return ServiceSpec(
        name="test", log_dir=log_dir, replicas=tuple(echo_replica(f"echo-{i}") for i in range(replicas)),
        gateway=GatewaySpec(config=GATEWAY) if gateway else None,
        prometheus=PrometheusSpec(enabled=prometheus, scrape_interval_s=1, evaluation_interval_s=1, rules=DRILL_RULES),
        restart=restart or RestartPolicy(backoff_s=0.2, max_backoff_s=1.0), ready_timeout_s=60, stop_timeout_s=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")  # a zombie is gone


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (a replica's engine-core child shares its group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(poll_s)
    return value
