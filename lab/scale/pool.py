"""The `Pool` protocol: how the scaler sees replicas (never engine internals).

Contract: a `Pool` starts and stops replicas to reach a count (`scale_to(n)`), reports them as
`ReplicaInfo` records (`replicas()`, after `refresh()` polls their health), and hands the ready ones'
base URLs to the gateway (`ready_endpoints()`, e.g. for its `POST /admin/replicas`). Replicas are
"starting" until their `/ready` answers 200, then "ready"; "stopping" while they drain; "failed"
if their process died. `close()` stops everything. `LocalPool` (processes on this machine) is the
default implementation; a Ray-actor pool implements the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


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
