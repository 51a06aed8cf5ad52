"""What a fault did and when: the record every `lab.chaos` action returns.

Contract: `FaultRecord(action, target, backend, detail, at)` stamps itself at construction (or carries
`at`, the `Instant` an action took just before it acted, so the service's reaction never precedes it)
with both clocks: `at_wall_s` (`time.time()`, for humans and for lining up with Prometheus) and
`at_monotonic_s` (`time.monotonic()`, for durations). On Linux CLOCK_MONOTONIC is system-wide, so
times taken in another process on this machine (the drill load generator, the fault proxy) line up
with it. `as_dict()` is the JSON-able form that chaostoolkit writes into its journal: every action
says what it did (`action`), to what (`target`), through which mechanism (`backend`: "signal",
"proxy", "netns", "load") and when.
`Instant.now()` is the same pair of clocks, for fault start/end marks a notebook takes itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Instant:
    wall_s: float  # time.time()
    monotonic_s: float  # time.monotonic()

    @classmethod
    def now(cls) -> Instant:
        return cls(time.time(), time.monotonic())


@dataclass(frozen=True)
class FaultRecord:
    action: str  # e.g. "kill_process_group", "partition"
    target: str  # what it hit, e.g. "pid 1234 (process group 1234)", "127.0.0.1:9100 -> 127.0.0.1:8001"
    backend: str  # signal | proxy | netns | load
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-able specifics (signal, pids, fault settings)
    at: Instant = field(default_factory=Instant.now)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "backend": self.backend,
                "at_wall_s": self.at.wall_s, "at_monotonic_s": self.at.monotonic_s, **self.detail}
