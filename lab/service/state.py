"""`<log_dir>/state.json`: what a running local service is made of, for `lab down`, `lab.chaos` and people.

Schema (version 1), rewritten whole (write to a temporary file, then rename) on every change:

    {"schema": 1,
     "service": "local",                      # the spec's name
     "status": "starting",                    # starting | ready | stopping | stopped | failed (start failed)
     "supervisor_pid": 1234,                  # the process supervising: `lab up` (its daemon with --detach)
     "supervisor": "lab up",                  # "lab up" (stops everything on SIGTERM: what `lab down` sends)
                                              # or "python" (a program using lab.service.Service)
     "config": "/abs/service.yaml",           # the YAML it came from, or null (a Python spec)
     "log_dir": "/abs/runs/up/local",
     "gateway_url": "http://127.0.0.1:41000", # null without a gateway
     "prometheus_url": "http://127.0.0.1:41001",  # null when disabled
     "processes": [{"name": "a-0", "kind": "replica",   # replica | proxy | gateway | prometheus
                    "pid": 2345,              # leads its own process group: os.killpg(pid, sig) reaches its children
                    "port": 40123, "url": "http://127.0.0.1:40123",  # a restart keeps the port
                    "version": "v1",          # replicas only, else null
                    "started_at": 1718000000.0,   # unix seconds, the current pid's start
                    "restarts": 0,            # starts after the first, by the supervisor or Service.restart()
                    "ready_after_s": 0.8,     # the current pid's start to its first ready (null: not yet)
                    "state": "ready",         # starting | ready | down (restart due) | failed (gave up)
                                              # | exited (restart: never) | stopped
                    "log": "/abs/runs/up/local/a-0.log",
                    # replicas only (else null), see lab.service.network:
                    "network": "proxy",       # direct | proxy | netns
                    "route_url": "http://127.0.0.1:40200",  # what the gateway calls: the replica or its proxy
                    "proxy_control_url": "http://127.0.0.1:40201",  # proxy: the fault proxy's control API
                    "namespace": null}],      # netns: the lab namespace it runs in
                                              # (a proxy is a process too: kind "proxy", name "<replica>-proxy")
     "events": [{"time": 1718000000.0, "process": "a-0", "event": "exited", "detail": "status -9"}]}

Events (unix seconds): `started`, `ready`, `exited` (died by itself; detail: its status), `restarting`
(detail: the backoff), `restart_failed`, `gave_up` (failed `max_restarts` times in a row), `stopped` (asked
to). A replica was down from its `exited` (or `stopped` for a restart) to its next `ready`: `downtimes()`.
`refuse_a_second_supervisor(path)` guards a log_dir in use.
`events` keeps the last `MAX_EVENTS`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.service.process import pid_alive

SCHEMA = 1
LIVE_STATUSES = ("starting", "ready", "stopping")
MAX_EVENTS = 1000
STATE_FILE = "state.json"


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    kind: str
    pid: int | None
    port: int
    url: str
    version: str | None
    started_at: float
    restarts: int
    state: str
    log: str
    ready_after_s: float | None = None
    network: str | None = None  # replicas: direct | proxy | netns
    route_url: str | None = None  # replicas: what the gateway calls (the replica, or its fault proxy)
    proxy_control_url: str | None = None  # network proxy: the fault proxy's control API
    namespace: str | None = None  # network netns: the lab network namespace


@dataclass(frozen=True)
class Event:
    time: float
    process: str
    event: str
    detail: str = ""


@dataclass(frozen=True)
class Downtime:
    process: str
    down_at: float  # unix seconds: exited, or stopped for a restart
    ready_at: float | None  # back and ready; None while still down

    @property
    def seconds(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.down_at


@dataclass(frozen=True)
class ServiceState:
    service: str
    status: str
    supervisor_pid: int
    supervisor: str  # "lab up" or "python"
    config: str | None
    log_dir: str
    gateway_url: str | None
    prometheus_url: str | None
    processes: tuple[ProcessRecord, ...] = ()
    events: tuple[Event, ...] = ()
    schema: int = SCHEMA

    def process(self, name: str) -> ProcessRecord:
        for record in self.processes:
            if record.name == name:
                return record
        raise LabError(f"no process {name!r} in service {self.service!r}; known: {[p.name for p in self.processes]}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = data["events"][-MAX_EVENTS:]
        return {"schema": data.pop("schema"), **data}


def write_state(path: Path, state: ServiceState) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)  # readers never see half a file


def read_state(path: Path) -> ServiceState:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"no {path}: no service was started there (lab up --config FILE writes it)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise LabError(f"cannot read service state {path}: {error}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise LabError(f"{path}: not a lab.service state file of schema {SCHEMA}")
    try:
        processes = tuple(ProcessRecord(**p) for p in data.pop("processes"))
        events = tuple(Event(**e) for e in data.pop("events"))
        return ServiceState(**data, processes=processes, events=events)
    except (KeyError, TypeError) as error:
        raise LabError(f"{path}: malformed service state ({error})") from None


def refuse_a_second_supervisor(path: Path) -> None:
    """`LabError` when `path` belongs to a live service of another process: two supervisors, one log_dir."""
    if not path.exists():
        return
    try:
        old = read_state(path)
    except LabError:
        return  # unreadable: nobody can use it either; this start overwrites it
    if old.status in LIVE_STATUSES and old.supervisor_pid != os.getpid() and pid_alive(old.supervisor_pid):
        raise LabError(f"service {old.service!r} is already running in {path.parent} (supervisor pid "
                       f"{old.supervisor_pid}); stop it first: lab down --state {path}")


def downtimes(events: tuple[Event, ...] | list[Event], process: str) -> list[Downtime]:
    """Each time `process` went down (exited, or stopped to restart) and when it was ready again."""
    found: list[Downtime] = []
    down_at: float | None = None
    for event in events:
        if event.process != process:
            continue
        if event.event in ("exited", "stopped") and down_at is None:
            down_at = event.time
        elif event.event == "ready" and down_at is not None:
            found.append(Downtime(process, down_at, event.time))
            down_at = None
    if down_at is not None:
        found.append(Downtime(process, down_at, None))
    return found
