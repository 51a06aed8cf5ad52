"""The `Pool` protocol: how the scaler sees replicas (never engine internals).

Contract: a `Pool` starts and stops replicas to reach a count (`scale_to(n)`), reports them as
`ReplicaInfo` records (`replicas()`, after `refresh()` polls their health), and hands the ready ones'
base URLs to the gateway (`ready_endpoints()`, e.g. for its `POST /admin/replicas`). Replicas are
"starting" until their `/ready` answers 200, then "ready"; "stopping" while they drain; "failed"
if their process died. `close()` stops everything. `LocalPool` (processes on this machine) is the
default implementation; a Ray-actor pool implements the same protocol.
Shared by the implementations: `probe_ready(url, timeout_s)` (does `GET <url>/ready` answer 200?)
and `wait_until_ready(refresh, n, ...)`, the loop behind each pool's `wait_ready`: poll `refresh()`
until `n` replicas are ready (their URLs), raising `LabError` at once when one has failed (with the
pool's own explanation) or when `timeout_s` passes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from lab.errors import LabError


class ReplicaState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True)
class ReplicaInfo:
    name: str
    url: str  # base URL, e.g. http://127.0.0.1:8123
    state: ReplicaState
    started_at_s: float  # time.monotonic() when started
    ready_after_s: float | None  # cold start: seconds from start to the first 200 from /ready


class Pool(Protocol):
    def scale_to(self, replicas: int) -> None: ...

    def refresh(self) -> list[ReplicaInfo]: ...

    def replicas(self) -> list[ReplicaInfo]: ...

    def ready_endpoints(self) -> list[str]: ...

    def close(self) -> None: ...


def probe_ready(url: str, timeout_s: float, ready_path: str = "/ready") -> bool:
    """True when `GET <url><ready_path>` answers 200 within `timeout_s`."""
    try:
        with urllib.request.urlopen(url + ready_path, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(refresh: Callable[[], list[ReplicaInfo]], replicas: int, *, timeout_s: float, poll_s: float,
                     explain_failed: Callable[[list[ReplicaInfo]], str], where: str = "") -> list[str]:
    """The ready replicas' URLs once `replicas` are ready; see the module docstring."""
    deadline = time.monotonic() + timeout_s
    while True:
        infos = refresh()
        failed = [i for i in infos if i.state is ReplicaState.FAILED]
        if failed:
            raise LabError(explain_failed(failed))
        ready = [i.url for i in infos if i.state is ReplicaState.READY]
        if len(ready) >= replicas:
            return ready
        if time.monotonic() > deadline:
            raise LabError(f"{len(ready)} of {replicas} replicas ready after {timeout_s:g} s{where}")
        time.sleep(poll_s)
