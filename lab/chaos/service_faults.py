"""Faults on a `lab up` service by name: the process and network actions, with their targets read from state.json.

Contract (chaostoolkit actions; each returns the `FaultRecord.as_dict()` of the action it ran, plus
`target_name`: the replica or "gateway"):
- `kill_replica`, `hang_replica`, `resume_replica`, `terminate_replica` (SIGTERM: drain): the replica's
  process group (`lab.chaos.processes`), its pid read from state.json at the time of the call (so a resume
  in a rollback finds the same process, and a kill after a restart hits the new one). Resume of a replica
  that is gone is not an error.
- `kill_engine_core(state_path, replica)`: SIGKILL the replica's engine-core child only.
- `recycle_replica_if_unready(state_path, replica, wait_s)`: a rollback for faults a replica may not
  recover from alone (a dead engine core): if its `/ready` does not answer 200 within `wait_s`, SIGKILL its
  group so the supervisor starts it again; `recycled` says whether it did.
- `kill_gateway(state_path)`: SIGKILL the gateway's group (the supervisor restarts it on its port).
- `degrade_link(state_path, replica, kind, settings)`: a network fault (`kind`: latency, loss, reset,
  partition; `settings`: that kind's fields, `lab.chaos.network_faults`) on the link from the gateway to
  `replica`, through whatever the service put there: its fault proxy (`network: proxy`) or its namespace
  (`network: netns`); the record's `backend` says which. A `direct` replica is a `LabError` that says
  to give it `network: proxy`. `heal_link(state_path, replica, kind=None)` clears one kind or all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lab.chaos import network, processes
from lab.chaos.targets import process_pid, replica_link, service_state
from lab.errors import LabError
from lab.service.process import probe

__all__ = ["kill_replica", "hang_replica", "resume_replica", "terminate_replica", "kill_engine_core",
           "recycle_replica_if_unready", "kill_gateway", "degrade_link", "heal_link"]

LINK_FAULTS: dict[str, Callable[..., dict]] = {"latency": network.add_latency, "loss": network.add_loss,
                                                "reset": network.reset_connections, "partition": network.partition}
READY_POLL_S = 0.25


def _named(record: dict, name: str) -> dict:
    return {**record, "target_name": name}


def kill_replica(state_path: str, replica: str, wait_s: float = 5.0) -> dict:
    return _named(processes.kill_process_group(process_pid(state_path, replica), wait_s), replica)


def hang_replica(state_path: str, replica: str, wait_s: float = 5.0) -> dict:
    return _named(processes.hang_process_group(process_pid(state_path, replica), wait_s), replica)


def resume_replica(state_path: str, replica: str) -> dict:
    record = service_state(state_path).process(replica)
    if record.pid is None:
        return _named({"action": "resume_process_group", "gone": True}, replica)
    return _named(processes.resume_process_group(record.pid), replica)


def terminate_replica(state_path: str, replica: str) -> dict:
    return _named(processes.terminate_process_group(process_pid(state_path, replica)), replica)


def kill_engine_core(state_path: str, replica: str, wait_s: float = 5.0) -> dict:
    return _named(processes.kill_engine_core(process_pid(state_path, replica), wait_s), replica)


def recycle_replica_if_unready(state_path: str, replica: str, wait_s: float = 10.0) -> dict:
    record = service_state(state_path).process(replica)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if probe(f"{record.url}/ready"):
            return {"action": "recycle_replica_if_unready", "target_name": replica, "recycled": False}
        time.sleep(READY_POLL_S)
        record = service_state(state_path).process(replica)
    if record.pid is None or record.state not in ("starting", "ready"):
        # the supervisor is restarting it already
        return {"action": "recycle_replica_if_unready", "target_name": replica, "recycled": False,
                "state": record.state}
    return {**_named(processes.kill_process_group(record.pid), replica), "recycled": True}


def kill_gateway(state_path: str, wait_s: float = 5.0) -> dict:
    return _named(processes.kill_process_group(process_pid(state_path, "gateway"), wait_s), "gateway")


def _where(state_path: str, replica: str) -> dict[str, str]:
    link = replica_link(state_path, replica)
    if link["network"] == "proxy":
        return {"proxy_url": link["proxy_control_url"]}
    if link["network"] == "netns":
        return {"namespace": link["namespace"]}
    raise LabError(f"replica {replica!r} is reached directly (network: direct): nothing sits on its link to fault; "
                   "give it `network: proxy` (or `network: netns` as root) in the service YAML")


def degrade_link(state_path: str, replica: str, kind: str, settings: dict[str, Any] | None = None) -> dict:
    if kind not in LINK_FAULTS:
        raise LabError(f"unknown link fault {kind!r}; the kinds are {', '.join(LINK_FAULTS)}")
    return _named(LINK_FAULTS[kind](**(settings or {}), **_where(state_path, replica)), replica)


def heal_link(state_path: str, replica: str, kind: str | None = None) -> dict:
    return _named(network.clear_network_faults(kind, **_where(state_path, replica)), replica)
