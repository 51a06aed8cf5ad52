"""`LocalPool`: replicas as `lab serve` processes on this machine, on free ports of 127.0.0.1.

Contract: `LocalPool(LocalPoolConfig(...))` implements `lab.scale.pool.Pool`. `scale_to(n)` starts
processes from `config.command` (a template whose `{port}` is replaced by a free port; the default
runs `python -m lab serve --model tiny --port {port}`) or stops the surplus (cold starts first, then
the newest ready ones). A stop sends SIGTERM (the server drains its in-flight requests and exits),
then SIGKILL after `stop_timeout_s`. `refresh()` polls each starting replica's `GET /ready` and
notices dead processes; `wait_ready(n, timeout_s)` blocks until `n` are ready or raises `LabError`
with the failed replicas' log tails. Each replica logs to `<log_dir>/<name>.log`. Use it as a
context manager (or call `close()`): every process it started is stopped, and only those.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.scale.pool import ReplicaInfo, ReplicaState, probe_ready, wait_until_ready


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalPoolConfig:
    command: tuple[str, ...] = (sys.executable, "-m", "lab", "serve", "--model", "tiny", "--port", "{port}")
    host: str = "127.0.0.1"
    ready_path: str = "/ready"
    probe_timeout_s: float = 0.5
    stop_timeout_s: float = 30.0
    log_dir: Path | None = None  # default: a temporary folder
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment

    def __post_init__(self) -> None:
        if not any("{port}" in part for part in self.command):
            raise ValueError("command must contain {port}: the pool picks each replica's port")


@dataclass
class _Process:
    name: str
    port: int
    popen: subprocess.Popen
    started_at_s: float
    log_path: Path
    ready_after_s: float | None = None
    stopping: bool = False
    stopped_at_s: float = 0.0  # time.monotonic() of the SIGTERM


class LocalPool:
    def __init__(self, config: LocalPoolConfig | None = None) -> None:
        self.config = config or LocalPoolConfig()
        self.log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="lab-scale-pool-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._processes: dict[str, _Process] = {}
        self._serial = 0
        self.started_pids: list[int] = []  # every process this pool started, for audits and tests

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, p: _Process) -> str:
        return f"http://{self.config.host}:{p.port}"

    def _start(self) -> None:
        self._serial += 1
        name, port = f"replica-{self._serial}", free_port(self.config.host)
        command = [part.replace("{port}", str(port)) for part in self.config.command]
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            # Own session: signals reach the replica and its children, never this process's group.
            popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.config.env}, start_new_session=True)
        self._processes[name] = _Process(name, port, popen, time.monotonic(), log_path)
        self.started_pids.append(popen.pid)

    def _stop(self, p: _Process) -> None:
        if p.popen.poll() is None and not p.stopping:
            os.killpg(p.popen.pid, signal.SIGTERM)
            p.stopped_at_s = time.monotonic()
        p.stopping = True

    def _state(self, p: _Process) -> ReplicaState:
        if p.stopping:
            return ReplicaState.STOPPING
        if p.popen.poll() is not None:
            return ReplicaState.FAILED
        return ReplicaState.READY if p.ready_after_s is not None else ReplicaState.STARTING

    def _probe(self, p: _Process) -> bool:
        return probe_ready(self._url(p), self.config.probe_timeout_s, self.config.ready_path)

    def refresh(self) -> list[ReplicaInfo]:
        for p in list(self._processes.values()):
            if p.stopping and p.popen.poll() is not None:
                del self._processes[p.name]  # drained and gone
            elif p.stopping and time.monotonic() - p.stopped_at_s > self.config.stop_timeout_s:
                os.killpg(p.popen.pid, signal.SIGKILL)
            elif self._state(p) is ReplicaState.STARTING and self._probe(p):
                p.ready_after_s = time.monotonic() - p.started_at_s
        return self.replicas()

    def replicas(self) -> list[ReplicaInfo]:
        return [ReplicaInfo(p.name, self._url(p), self._state(p), p.started_at_s, p.ready_after_s)
                for p in self._processes.values()]

    def ready_endpoints(self) -> list[str]:
        return [r.url for r in self.replicas() if r.state is ReplicaState.READY]

    def scale_to(self, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        live = [p for p in self._processes.values() if self._state(p) in (ReplicaState.STARTING, ReplicaState.READY)]
        for _ in range(replicas - len(live)):
            self._start()
        # Surplus: cold starts first (they serve nobody yet), then the newest ready ones.
        surplus = sorted(live, key=lambda p: (p.ready_after_s is not None, -p.started_at_s))[: max(0, len(live) - replicas)]
        for p in surplus:
            self._stop(p)

    def wait_ready(self, replicas: int, timeout_s: float = 120.0, poll_s: float = 0.2) -> list[str]:
        return wait_until_ready(self.refresh, replicas, timeout_s=timeout_s, poll_s=poll_s,
                                explain_failed=self._explain_failed, where=f"; logs in {self.log_dir}")

    def _explain_failed(self, failed: list[ReplicaInfo]) -> str:
        processes = [self._processes[i.name] for i in failed]
        tails = "\n".join(f"--- {p.name} (exit {p.popen.returncode}):\n{_tail(p.log_path)}" for p in processes)
        return f"{len(processes)} replica(s) exited before becoming ready:\n{tails}"

    def close(self) -> None:
        for p in self._processes.values():
            self._stop(p)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for p in self._processes.values():
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
        self._processes.clear()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
