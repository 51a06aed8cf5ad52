"""`RayPool`: replicas as Ray actors on an existing Ray cluster, one GPU each by default.

Contract: `RayPool(RayPoolConfig(address=...))` implements `lab.scale.pool.Pool`. Each replica is
a Ray actor (`num_gpus_per_replica`, `num_cpus_per_replica` resources) that starts `config.command`
(`{port}` replaced by a free port of its node; default `python -m lab serve --model tiny` on 0.0.0.0) as a
child process on whatever node Ray placed it, so Ray's `CUDA_VISIBLE_DEVICES` gives that process
its GPU. The replica's URL is `http://<node ip>:<port>`; the gateway routes to it over HTTP like
to any replica. `scale_to` creates or stops actors (cold starts first, then the newest ready);
`refresh` learns each new actor's URL without blocking (an actor waiting for a free GPU stays
"starting") and probes `/ready`. A stop asks the actor to SIGTERM its server (drain), then kills
the actor. `close()` stops every actor this pool created. Ray is imported only here (`pip install
'deepseek-serving-lab[ray]'`); `address=None` joins or starts a local Ray (tests use a CPU-only one).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from lab.scale.pool import ReplicaInfo, ReplicaState, probe_ready, wait_until_ready


@dataclass(frozen=True)
class RayPoolConfig:
    address: str | None = "auto"  # an existing cluster; None: a local Ray (started if none runs)
    command: tuple[str, ...] = (sys.executable, "-m", "lab", "serve", "--model", "tiny", "--host", "0.0.0.0",
                                "--port", "{port}")
    host: str | None = None  # host of replica URLs; None: the IP of the node Ray placed the replica on
    num_gpus_per_replica: float = 1.0
    num_cpus_per_replica: float = 1.0
    probe_timeout_s: float = 0.5
    stop_timeout_s: float = 30.0
    init_kwargs: tuple[tuple[str, Any], ...] = ()  # extra ray.init(...) arguments, e.g. (("num_cpus", 2),)

    def __post_init__(self) -> None:
        if not any("{port}" in part for part in self.command):
            raise ValueError("command must contain {port}: each replica picks a free port on its node")
        if self.num_gpus_per_replica < 0 or self.num_cpus_per_replica < 0:
            raise ValueError("resources per replica must be >= 0")


class _ReplicaProcess:
    """The actor body: one server process on this actor's node."""

    def __init__(self, command: list[str], host: str | None) -> None:
        import os
        import subprocess

        import ray

        from lab.scale.local_pool import free_port

        self.port = free_port("0.0.0.0")
        self.ip = host or ray.util.get_node_ip_address()
        argv = [part.replace("{port}", str(self.port)) for part in command]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, env=dict(os.environ), start_new_session=True)

    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout_s: float) -> int:
        import os
        import signal
        import subprocess

        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


@dataclass
class _Actor:
    name: str
    handle: Any
    url_ref: Any
    started_at_s: float
    url: str | None = None
    ready_after_s: float | None = None
    stopping: bool = False
    failed: bool = False


class RayPool:
    def __init__(self, config: RayPoolConfig | None = None) -> None:
        import ray

        self.config = config or RayPoolConfig()
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=self.config.address, ignore_reinit_error=True, include_dashboard=False,
                     logging_level="warning", **dict(self.config.init_kwargs))
        self._remote = ray.remote(_ReplicaProcess)
        self._actors: dict[str, _Actor] = {}
        self._serial = 0

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self, a: _Actor) -> ReplicaState:
        if a.stopping:
            return ReplicaState.STOPPING
        if a.failed:
            return ReplicaState.FAILED
        return ReplicaState.READY if a.ready_after_s is not None else ReplicaState.STARTING

    def _probe(self, url: str) -> bool:
        return probe_ready(url, self.config.probe_timeout_s)

    def scale_to(self, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        live = [a for a in self._actors.values() if self._state(a) in (ReplicaState.STARTING, ReplicaState.READY)]
        for _ in range(replicas - len(live)):
            self._serial += 1
            handle = self._remote.options(num_gpus=self.config.num_gpus_per_replica,
                                          num_cpus=self.config.num_cpus_per_replica).remote(list(self.config.command),
                                                                                   self.config.host)
            name = f"ray-replica-{self._serial}"
            self._actors[name] = _Actor(name, handle, handle.url.remote(), time.monotonic())
        surplus = sorted(live, key=lambda a: (a.ready_after_s is not None, -a.started_at_s))[: max(0, len(live) - replicas)]
        for a in surplus:
            self._stop(a)

    def _stop(self, a: _Actor) -> None:
        a.stopping = True
        try:
            self._ray.get(a.handle.stop.remote(self.config.stop_timeout_s), timeout=self.config.stop_timeout_s + 5)
        except Exception:  # noqa: BLE001 - the actor may be dead or still pending: kill it either way
            pass
        self._ray.kill(a.handle)
        del self._actors[a.name]

    def refresh(self) -> list[ReplicaInfo]:
        ray = self._ray
        for a in self._actors.values():
            if a.stopping or a.failed:
                continue
            if a.url is None:
                done, _ = ray.wait([a.url_ref], timeout=0)
                if not done:
                    continue  # still placed nowhere (no free GPU) or starting its process
                try:
                    a.url = ray.get(a.url_ref)
                except Exception:  # noqa: BLE001 - an actor that failed to start is a failed replica
                    a.failed = True
                    continue
            if a.ready_after_s is None:
                if ray.get(a.handle.exit_code.remote()) is not None:
                    a.failed = True
                elif self._probe(a.url):
                    a.ready_after_s = time.monotonic() - a.started_at_s
        return self.replicas()

    def replicas(self) -> list[ReplicaInfo]:
        return [ReplicaInfo(a.name, a.url or "", self._state(a), a.started_at_s, a.ready_after_s)
                for a in self._actors.values()]

    def ready_endpoints(self) -> list[str]:
        return [r.url for r in self.replicas() if r.state is ReplicaState.READY]

    def wait_ready(self, replicas: int, timeout_s: float = 180.0, poll_s: float = 0.5) -> list[str]:
        return wait_until_ready(self.refresh, replicas, timeout_s=timeout_s, poll_s=poll_s, where=" (Ray)",
                                explain_failed=_explain_failed)

    def close(self) -> None:
        for a in list(self._actors.values()):
            self._stop(a)


def _explain_failed(failed: list[ReplicaInfo]) -> str:
    return f"{len(failed)} Ray replica(s) exited before becoming ready (their logs are the actors' logs)"
