"""Real processes for the chaos tests: minimal upstreams, fault proxies and a `lab gateway` in front.

`Service` starts, on 127.0.0.1 and each in its own session (as `lab up` does, so process faults can
signal a replica's group without touching pytest): two `lab.studies.gateway_latency.upstream` replicas
("replica-a" behind a fault proxy, "replica-b" direct) and a gateway with a VIP and a batch key, an admin
key, probes every `HEALTH_INTERVAL_S` and a short upstream read timeout, so ejection and retries happen
within seconds. `close()` stops everything it started, and only that.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from lab.chaos.proxy_client import FaultProxyProcess, start_fault_proxy
from lab.gateway.auth import hash_key

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"vip": "sk-chaos-vip", "batch": "sk-chaos-batch"}
ADMIN_KEY = "sk-chaos-admin"
HEALTH_INTERVAL_S = 0.5
READ_TIMEOUT_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_http(url: str, process: subprocess.Popen, timeout_s: float = 60.0, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == expect:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering {expect} after {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGCONT)  # a hung (stopped) process cannot act on SIGTERM
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_upstream(port: int, log: Path) -> subprocess.Popen:
    process = spawn([sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--port", str(port)], log)
    wait_http(f"http://127.0.0.1:{port}/v1/models", process)
    return process


@dataclass
class Service:
    workdir: Path
    upstreams: dict[str, subprocess.Popen] = field(default_factory=dict)
    upstream_ports: dict[str, int] = field(default_factory=dict)
    proxy: FaultProxyProcess | None = None
    gateway: subprocess.Popen | None = None
    gateway_url: str = ""

    def start(self) -> Service:
        try:
            for name in ("replica-a", "replica-b"):
                self.upstream_ports[name] = free_port()
                self.upstreams[name] = start_upstream(self.upstream_ports[name], self.workdir / f"{name}.log")
            self.proxy = start_fault_proxy(self.upstream_ports["replica-a"], log_path=self.workdir / "proxy.log")
            config = {
                "keys": [{"name": tier, "tier": tier, "hash": hash_key(key)} for tier, key in KEYS.items()],
                "admin_key_hash": hash_key(ADMIN_KEY),
                "replicas": [{"url": self.proxy.url, "version": "v1", "name": "replica-a"},
                             {"url": f"http://127.0.0.1:{self.upstream_ports['replica-b']}", "version": "v1",
                              "name": "replica-b"}],
                "health": {"interval_s": HEALTH_INTERVAL_S, "failure_threshold": 3, "probe_timeout_s": 1.0},
                "proxy": {"connect_timeout_s": 1.0, "read_timeout_s": READ_TIMEOUT_S},
            }
            (self.workdir / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            port = free_port()
            self.gateway_url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "lab", "gateway", "--config", str(self.workdir / "gateway.yaml"),
                       "--host", "127.0.0.1", "--port", str(port)]
            self.gateway = spawn(command, self.workdir / "gateway.log")
            wait_http(f"{self.gateway_url}/ready", self.gateway)
        except BaseException:
            self.close()
            raise
        return self

    def tiers(self, rate_per_s: float) -> dict:
        return {tier: {"api_key": key, "rate_per_s": rate_per_s} for tier, key in KEYS.items()}

    def close(self) -> None:
        if self.gateway is not None:
            stop(self.gateway)
        if self.proxy is not None:
            self.proxy.stop()
        for process in self.upstreams.values():
            stop(process)
