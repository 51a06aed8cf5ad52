"""`Slot`: one process under supervision, and the restart policy as its state machine.

Contract: a `Slot` holds a `ManagedProcess` and what the supervisor knows of it: `state` (new -> starting ->
ready; on an exit: down, with a restart due after the policy's backoff, then starting again; or exited
under `never`, or failed once it failed `max_restarts` times in a row without becoming ready; stopped at
the end), `restarts` (starts after the first), `failures_in_a_row` (reset when ready), `ready_after_s`.
`launch(say)`, `mark_ready(say)` and `tend(policy, say)` move it and report each step as an event through
`say(process_name, event, detail)`; `tend` is one look by the monitor and returns whether anything changed.
`held` marks a slot that `Service.restart()` or `Service.stop()` owns, which the monitor leaves alone.
`record()` is its `ProcessRecord` for state.json (with `link`: a replica's network, route, proxy, namespace).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.errors import LabError
from lab.service.process import ManagedProcess
from lab.service.spec import RestartPolicy
from lab.service.state import ProcessRecord

Say = Callable[[str, str, str], None]  # (process name, event, detail)


@dataclass
class Slot:
    process: ManagedProcess
    version: str | None = None
    restarts: int = 0
    failures_in_a_row: int = 0
    state: str = "new"  # new | starting | ready | down | failed | exited | stopped
    restart_at: float = 0.0  # time.monotonic() when a down process is due to start again
    held: bool = False
    ready_after_s: float | None = None  # the current pid's start to its first ready
    link: dict | None = None  # replicas: how the gateway reaches it (ProcessRecord's network fields)

    def launch(self, say: Say) -> None:
        self.process.start()
        self.state, self.ready_after_s = "starting", None
        say(self.process.name, "started", f"pid {self.process.pid}")

    def mark_ready(self, say: Say) -> None:
        self.state, self.failures_in_a_row = "ready", 0
        self.ready_after_s = time.monotonic() - self.process.started_monotonic
        say(self.process.name, "ready", f"after {self.ready_after_s:.2f} s")

    def tend(self, policy: RestartPolicy, say: Say) -> bool:
        """One look: notice readiness or an exit, restart when due. True if anything changed."""
        process = self.process
        if self.state in ("starting", "ready"):
            code = process.exit_code()
            if code is None:
                if self.state == "starting" and process.is_ready():
                    self.mark_ready(say)
                    return True
                return False
            process.signal(signal.SIGKILL)  # its children: an engine core can outlive a SIGKILLed server
            self.failures_in_a_row += 1
            say(process.name, "exited", f"status {code}")
            if policy.policy == "never":
                self.state = "exited"
            elif self.failures_in_a_row > policy.max_restarts:
                self.state = "failed"
                say(process.name, "gave_up", f"{self.failures_in_a_row} failures in a row; log {process.log_path}")
            else:
                delay = policy.delay_s(self.failures_in_a_row)
                self.state, self.restart_at = "down", time.monotonic() + delay
                say(process.name, "restarting", f"in {delay:g} s")
            return True
        if self.state == "down" and time.monotonic() >= self.restart_at:
            try:
                self.restarts += 1
                self.launch(say)
            except LabError as error:  # e.g. the binary vanished: count it as a failure and back off
                self.failures_in_a_row += 1
                self.restart_at = time.monotonic() + policy.delay_s(self.failures_in_a_row)
                say(process.name, "restart_failed", str(error))
            return True
        return False

    def record(self) -> ProcessRecord:
        p = self.process
        return ProcessRecord(p.name, p.kind, p.pid, p.port, f"http://{p.host}:{p.port}", self.version, p.started_at,
                             self.restarts, self.state, str(p.log_path), self.ready_after_s, **(self.link or {}))
