"""`lab up --detach` and `lab down`: a service left running under its own supervising process, and its end.

Contract:
- `start_detached(spec)` runs `python -m lab up --config <spec.source>` (the foreground supervisor) in a
  new session, its output in `<log_dir>/supervisor.log`, and returns the `ServiceState` once `state.json`
  says that process's service is ready. If the supervisor exits first, the `LabError` carries the tail of
  supervisor.log (a replica's failure and log tail are in it); past the wait it is stopped and a
  `LabError` says so.
- `stop_service(state_path, timeout_s)` sends SIGTERM to the supervisor recorded in `state.json`, which
  stops the gateway, the replicas and Prometheus in that order, and waits for it to exit. Processes that
  are still alive afterwards (a supervisor killed with SIGKILL leaves its children behind) get SIGTERM,
  then SIGKILL, by process group; only pids recorded in `state.json` that still lead their own group are
  touched; the network namespaces of its netns replicas are deleted. A service supervised by a Python
  program (`supervisor: "python"`) is refused: stop it there.
  Returns the pids it found still alive and ended itself (empty after a clean stop); a state.json its dead
  supervisor left "ready" is marked "stopped".
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.errors import LabError
from lab.service.network import delete_namespace
from lab.service.process import pid_alive, tail
from lab.service.spec import ServiceSpec
from lab.service.state import (LIVE_STATUSES, STATE_FILE, Event, ServiceState, read_state, refuse_a_second_supervisor,
                               write_state)

POLL_S = 0.2


def start_detached(spec: ServiceSpec) -> ServiceState:
    if spec.source is None:
        raise LabError("lab up --detach needs the service's YAML file (the supervisor reads it again)")
    log_dir = spec.resolved_log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = log_dir / STATE_FILE, log_dir / "supervisor.log"
    refuse_a_second_supervisor(state_path)  # before supervisor.log of the running one is overwritten
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "lab", "up", "--config", str(spec.source)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Replicas first, then the gateway: two ready timeouts at most, plus the supervisor's own start.
    wait_s = 2 * spec.ready_timeout_s + 30
    deadline = time.monotonic() + wait_s
    while True:
        if daemon.poll() is not None:
            raise LabError(f"lab up --detach: the supervisor exited with status {daemon.returncode} before the service "
                           f"was ready; last lines of {log_path}:\n{tail(log_path, 30)}")
        state = _state_or_none(state_path)
        if state is not None and state.supervisor_pid == daemon.pid and state.status == "ready":
            return state
        if time.monotonic() > deadline:
            daemon.terminate()  # it stops what it started
            daemon.wait(timeout=spec.stop_timeout_s * 3 + 10)
            raise LabError(f"lab up --detach: not ready after {wait_s:g} s; see {log_path}")
        time.sleep(POLL_S)


def _state_or_none(path: Path) -> ServiceState | None:
    try:
        return read_state(path)
    except LabError:
        return None  # not written yet


def stop_service(state_path: Path, timeout_s: float) -> list[int]:
    state = read_state(state_path)
    supervisor = state.supervisor_pid
    if pid_alive(supervisor) and state.status in LIVE_STATUSES:
        if state.supervisor != "lab up":
            raise LabError(f"service {state.service!r} is supervised by pid {supervisor}, a Python program using "
                           "lab.service.Service; stop it there (Service.stop(), or leave its `with` block)")
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if pid_alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)  # it did not finish in time: what it left is ended below
    left = _end_leftovers(state)
    for name in {p.namespace for p in state.processes if p.namespace}:  # a netns replica's, left by a killed supervisor
        delete_namespace(name)
    after = read_state(state_path)
    if after.status in LIVE_STATUSES:  # its supervisor died without saying so: say it for it
        processes = tuple(dataclasses.replace(p, state="stopped") for p in after.processes)
        ended = Event(time.time(), "supervisor", "stopped", f"by lab down; ended leftover pids {left}")
        write_state(state_path, dataclasses.replace(after, status="stopped", processes=processes,
                                                    events=(*after.events, ended)))
    return left


def _end_leftovers(state: ServiceState) -> list[int]:
    # A recorded pid that still leads its own group is ours (each process started its own session).
    left = [p.pid for p in state.processes if p.pid is not None and pid_alive(p.pid) and _leads_group(p.pid)]
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in left:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while any(map(pid_alive, left)) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    return left


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
