"""Real processes for the gateway tests: upstreams and `lab gateway` itself, on 127.0.0.1, stopped however a test ends.

`process(args, ready_url)` starts `python -m <args>` and waits until `ready_url` answers 200 (bounded);
`upstream_process(module)` runs an upstream module (`lab.studies.gateway_latency.upstream`, or
`tests.gateway.upstreams`) on a free port and yields its URL and `Popen`; `gateway_process(config, tmp)`
writes a gateway config (a mapping in the YAML schema) and runs `python -m lab gateway --config` on a
free port, yielding its URL; `gateway_mapping(replicas, **sections)` is such a config with the test keys
(`fakes.KEYS`, `fakes.ADMIN_KEY`) and one replica per `name -> url`. Every process is ended by its own pid: SIGTERM, then SIGKILL after 20 s;
a stopped (SIGSTOP) one gets SIGCONT first, so it can end.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from lab.gateway.auth import hash_key
from tests.gateway.fakes import ADMIN_KEY, KEYS, free_port, tier

ROOT = Path(__file__).resolve().parents[2]


def wait_until_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout_s} s"
        time.sleep(0.1)


def end(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


@contextlib.contextmanager
def process(args: list[str], ready_url: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(ready_url, proc)
        yield proc
    finally:
        end(proc)


@contextlib.contextmanager
def upstream_process(module: str = "tests.gateway.upstreams") -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([module, "--port", str(port)], url + "/v1/models") as proc:
        yield url, proc


@contextlib.contextmanager
def gateway_process(config: dict[str, Any], tmp: Path, *options: str) -> Iterator[str]:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(["lab", "gateway", "--config", str(path), "--port", str(port), *options], url + "/health"):
        yield url


def gateway_mapping(replicas: dict[str, str], **sections: Any) -> dict[str, Any]:
    tiers = [tier("vip", 0), tier("realtime", 1), tier("async", 2), tier("batch", 3)]
    keys = [{"name": f"key-{name}", "tier": name, "hash": hash_key(key)} for name, key in KEYS.items()]
    return {"tiers": tiers, "keys": keys, "admin_key_hash": hash_key(ADMIN_KEY),
            "replicas": [{"url": url, "version": "v1", "name": name} for name, url in replicas.items()], **sections}
