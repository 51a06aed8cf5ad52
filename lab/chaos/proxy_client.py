"""Start a fault proxy process (`lab.chaos.fault_proxy`) and call its control API from Python.

Contract:
- `start_fault_proxy(target_port, ...)` starts `python -m lab.chaos.fault_proxy` in its own session
  (port 0 = a free port; output to `log_path`), waits for its one JSON line (`ready_timeout_s`) and returns a
  `FaultProxyProcess` (`listen_port`, `control_url`, `pid`, `url` = what the gateway should call instead
  of the replica); `stop()` (or leaving the `with` block) sends SIGTERM, then SIGKILL. A proxy that exits
  or stays silent is a `LabError` with its output.
- `set_proxy_fault(control_url, kind, fields)`, `clear_proxy_faults(control_url, kind=None)` and
  `proxy_status(control_url)` call the API; an unreachable proxy or a 400 is a `LabError` carrying the
  proxy's own message. They return the proxy's status (active faults and counters).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.errors import LabError

CONTROL_TIMEOUT_S = 5.0
READY_POLL_S = 0.02


@dataclass
class FaultProxyProcess:
    popen: subprocess.Popen
    listen_host: str
    listen_port: int
    control_port: int
    target: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def __enter__(self) -> FaultProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def start_fault_proxy(target_port: int, target_host: str = "127.0.0.1", *, listen_port: int = 0,
                      control_port: int = 0, listen_host: str = "127.0.0.1", seed: int = 0,
                      ready_timeout_s: float = 10.0, log_path: str | Path | None = None) -> FaultProxyProcess:
    """See the module docstring; the proxy's output goes to `log_path` (default: a temporary file)."""
    argv = [sys.executable, "-m", "lab.chaos.fault_proxy", "--listen-host", listen_host, "--listen-port",
            str(listen_port), "--target-host", target_host, "--target-port", str(target_port),
            "--control-port", str(control_port), "--seed", str(seed)]
    log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="lab-fault-proxy-", suffix=".log")[1])
    # A file, not a pipe: nobody reads the proxy's output after the start, and a full pipe would block it.
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline and popen.poll() is None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                ready = json.loads(line)
                return FaultProxyProcess(popen, listen_host, ready["listen_port"], ready["control_port"],
                                         ready["target"], log_path)
        time.sleep(READY_POLL_S)
    FaultProxyProcess(popen, listen_host, 0, 0, "", log_path).stop()
    raise LabError(f"the fault proxy did not start within {ready_timeout_s} s (exit {popen.returncode}): "
                   f"{log_path.read_text(errors='replace')[-1500:]}")


def _call(method: str, control_url: str, path: str, body: Any = None) -> dict:
    url = f"{control_url.rstrip('/')}{path}"
    try:
        response = httpx.request(method, url, json=body, timeout=CONTROL_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as error:
        raise LabError(f"fault proxy control API at {control_url} not reachable: "
                       f"{type(error).__name__}: {error}") from None
    try:
        payload = response.json()
    except ValueError:
        raise LabError(f"fault proxy at {control_url} answered {response.status_code} without JSON") from None
    if response.status_code != 200:
        raise LabError(f"fault proxy at {control_url} refused {method} {path}: {payload.get('error', payload)}")
    return payload


def set_proxy_fault(control_url: str, kind: str, fields: dict[str, Any] | None = None) -> dict:
    return _call("PUT", control_url, f"/faults/{kind}", fields or {})


def clear_proxy_faults(control_url: str, kind: str | None = None) -> dict:
    return _call("DELETE", control_url, f"/faults/{kind}" if kind else "/faults")


def proxy_status(control_url: str) -> dict:
    return _call("GET", control_url, "/faults")
