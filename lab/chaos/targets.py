"""Targets of a drill on a `lab up` service, read from its state.json: pids, URLs, the link to a replica.

Contract (chaostoolkit probes; experiments in chaos/ name the service by `state_path` and the target by
name, so nothing needs copying by hand after `lab up`):
- `service_state(state_path)`: the `ServiceState` (`lab.service.state`); a missing or unreadable file is a
  `LabError` that says to run `lab up` first.
- `gateway_url(state_path)`, `prometheus_url(state_path)`, `process_pid(state_path, name)` (a replica, a
  proxy, the gateway), `replica_link(state_path, replica)` (`{"network", "route_url", "proxy_control_url",
  "namespace"}`: which network-fault backend can act on that replica: "proxy" or "netns"; "direct" none).
- `wait_for_process_ready(state_path, name, timeout_s, replaced_pid=None)`: polls state.json until the
  supervisor says `name` is ready again (with a pid other than `replaced_pid`: after a kill, the old record
  still says ready until the supervisor notices); returns its pid, restarts and when (both clocks), or a
  `LabError` at the timeout. Time to recover (ready again) is measured from a fault record with it.
- `wait_for_url_ready(url, timeout_s)`: polls `GET url` until 200 (a restarted gateway's /ready).
- `new_summary_path(directory, drill)`: a file name no run used yet, `<directory>/<drill>-<time>.json`,
  for a drill's client ledger (the "nothing lost" probe reads it before and after: a stale file from an
  earlier run must never answer for this one).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from lab.errors import LabError
from lab.service.state import ProcessRecord, ServiceState, read_state

__all__ = ["gateway_url", "prometheus_url", "process_pid", "replica_link", "wait_for_process_ready",
           "wait_for_url_ready", "new_summary_path"]

POLL_S = 0.1


def service_state(state_path: str | Path) -> ServiceState:
    try:
        return read_state(Path(state_path))
    except LabError as error:
        raise LabError(f"{error}; start the service first: lab up --config chaos/service.yaml --detach") from None


def _process(state_path: str | Path, name: str) -> ProcessRecord:
    return service_state(state_path).process(name)


def gateway_url(state_path: str) -> str:
    url = service_state(state_path).gateway_url
    if url is None:
        raise LabError(f"the service of {state_path} runs no gateway; a drill needs one")
    return url


def prometheus_url(state_path: str) -> str | None:
    return service_state(state_path).prometheus_url


def process_pid(state_path: str, name: str) -> int:
    record = _process(state_path, name)
    if record.pid is None or record.state not in ("starting", "ready"):
        raise LabError(f"{name} is {record.state}, not running (pid {record.pid}); log {record.log}")
    return record.pid


def replica_link(state_path: str, replica: str) -> dict:
    record = _process(state_path, replica)
    if record.kind != "replica":
        raise LabError(f"{replica!r} is the service's {record.kind}, not a replica")
    return {"replica": replica, "network": record.network or "direct", "route_url": record.route_url or record.url,
            "proxy_control_url": record.proxy_control_url, "namespace": record.namespace}


def wait_for_process_ready(state_path: str, name: str, timeout_s: float = 120.0,
                           replaced_pid: int | None = None) -> dict:
    start = time.monotonic()
    while True:
        record = _process(state_path, name)
        now = time.monotonic()
        if record.state == "ready" and record.pid != replaced_pid:
            return {"process": name, "pid": record.pid, "restarts": record.restarts, "waited_s": now - start,
                    "at_monotonic_s": now, "at_wall_s": time.time(), "ready_after_s": record.ready_after_s}
        if record.state in ("failed", "exited", "stopped"):
            raise LabError(f"{name} is {record.state}: the supervisor will not start it again; log {record.log}")
        if now - start >= timeout_s:
            raise LabError(f"{name} is {record.state} (pid {record.pid}), not ready again, after {timeout_s} s")
        time.sleep(POLL_S)


def wait_for_url_ready(url: str, timeout_s: float = 60.0) -> dict:
    start = time.monotonic()
    while True:
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                now = time.monotonic()
                return {"url": url, "waited_s": now - start, "at_monotonic_s": now, "at_wall_s": time.time()}
        except httpx.HTTPError:
            pass
        if time.monotonic() - start >= timeout_s:
            raise LabError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(POLL_S)


def new_summary_path(directory: str, drill: str) -> str:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = folder / f"{drill}-{stamp}{f'-{n}' if n else ''}.json"
        if not path.exists():
            return str(path)
    raise LabError(f"no free summary file name in {folder} for {drill}")
