"""Process faults: kill, hang, resume or drain a replica's process group, or only its engine core.

Contract (chaostoolkit actions: JSON-able arguments, each returns a `FaultRecord.as_dict()`):
- `kill_process_group(pid)` SIGKILL, `hang_process_group(pid)` SIGSTOP, `resume_process_group(pid)`
  SIGCONT, `terminate_process_group(pid)` SIGTERM (a `lab serve` replica drains, then exits). The
  signal goes to the process group of `pid`: `lab up` and `LocalPool` start every replica in its own
  session, so the group is the replica and its children (engine core, resource tracker).
- `find_engine_core(replica_pid)`: the pid of the replica's engine-core child, found by parent pid and
  command line (`lab serve` starts its core with multiprocessing's *spawn*, whose command line runs
  `spawn_main`; pass `cmdline_contains` for another server, e.g. "VLLM::EngineCore").
  `kill_engine_core`, `hang_engine_core`, `resume_engine_core` signal that one process only.
- Killing waits up to `wait_s` for the processes to be gone and says whether they were (`exited`);
  hanging waits for them to show as stopped (`stopped`). Resuming a process that is gone is not an
  error (a rollback may run after the process died): the record says `gone: true`.
Refusals are `LabError`s naming the problem: a pid that is not a positive integer, no such process,
the caller's own process group (a drill must never signal the runner that runs it), no engine core.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

from lab.chaos.records import FaultRecord, Instant
from lab.errors import LabError

__all__ = [
    "kill_process_group",
    "hang_process_group",
    "resume_process_group",
    "terminate_process_group",
    "find_engine_core",
    "kill_engine_core",
    "hang_engine_core",
    "resume_engine_core",
]

# multiprocessing's spawn child runs `python -c "... spawn_main(...)" --multiprocessing-fork`
ENGINE_CORE_MARKER = "spawn_main"
POLL_S = 0.02


def _pid(value: object, what: str = "pid") -> int:
    # chaostoolkit configuration may hand a pid over as text ("${replica_pid}" from an env var).
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) == 0:
        raise LabError(f"{what} must be a positive integer, got {value!r}")
    return int(text)


def _group_of(pid: int) -> int:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        raise LabError(f"no process with pid {pid}") from None
    if pgid == os.getpgrp():
        raise LabError(f"pid {pid} is in this process's own group {pgid}; start the target in its own session "
                       "(as lab up and LocalPool do) so a fault cannot hit the drill's runner")
    if pgid <= 1:
        raise LabError(f"refusing to signal process group {pgid} of pid {pid}")
    return pgid


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) pids of a process group, sorted."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == pgid:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return sorted(members)


def _status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


def _wait(pids: list[int], done: set[str], wait_s: float) -> bool:
    """True once every pid's status is in `done` ("gone" counts as a zombie does), within wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        if all(_status(pid) in done for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


_GONE = {"gone", psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}
_STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP} | _GONE


def _signal_group(action: str, pid: object, sig: signal.Signals, wait_for: set[str] | None, wait_s: float) -> dict:
    pid = _pid(pid)
    pgid = _group_of(pid)
    members = group_members(pgid)
    at = Instant.now()  # stamped before the signal: whatever the service does about it comes after
    os.killpg(pgid, sig)
    record = FaultRecord(action, f"pid {pid} (process group {pgid})", "signal",
                         {"pid": pid, "pgid": pgid, "signal": sig.name, "members": members}, at)
    result = record.as_dict()
    if wait_for is not None:
        result["exited" if wait_for is _GONE else "stopped"] = _wait(members, wait_for, wait_s)
    return result


def kill_process_group(pid: int, wait_s: float = 5.0) -> dict:
    """SIGKILL the process group of `pid`; `exited` says whether all of it was gone within `wait_s`."""
    return _signal_group("kill_process_group", pid, signal.SIGKILL, _GONE, wait_s)


def hang_process_group(pid: int, wait_s: float = 5.0) -> dict:
    """SIGSTOP the process group of `pid`: it holds its sockets but answers nothing until resumed."""
    return _signal_group("hang_process_group", pid, signal.SIGSTOP, _STOPPED, wait_s)


def terminate_process_group(pid: int) -> dict:
    """SIGTERM the process group of `pid` (a replica drains its requests, then exits)."""
    return _signal_group("terminate_process_group", pid, signal.SIGTERM, None, 0.0)


def resume_process_group(pid: int) -> dict:
    """SIGCONT the process group of `pid`; a group that is gone is reported, not an error (rollbacks)."""
    pid = _pid(pid)
    try:
        return _signal_group("resume_process_group", pid, signal.SIGCONT, None, 0.0)
    except LabError:
        if _status(pid) in _GONE:
            return FaultRecord("resume_process_group", f"pid {pid}", "signal",
                               {"pid": pid, "signal": "SIGCONT", "gone": True}).as_dict()
        raise


def find_engine_core(replica_pid: int, cmdline_contains: str = ENGINE_CORE_MARKER) -> int:
    """The one child of `replica_pid` whose command line contains `cmdline_contains`."""
    replica_pid = _pid(replica_pid, "replica_pid")
    try:
        children = psutil.Process(replica_pid).children(recursive=False)
    except psutil.NoSuchProcess:
        raise LabError(f"no process with pid {replica_pid}") from None
    found, seen = [], []
    for child in children:
        try:
            cmdline, alive = " ".join(child.cmdline()), child.status() not in _GONE
        except psutil.Error:
            continue
        seen.append(f"{child.pid}: {cmdline[:120]}")
        if cmdline_contains in cmdline and alive:
            found.append(child.pid)
    if len(found) != 1:
        listing = "; ".join(seen) or "no children"
        raise LabError(f"expected one child of pid {replica_pid} whose command line contains {cmdline_contains!r}, "
                       f"found {len(found)} ({listing})")
    return found[0]


def _signal_core(action: str, replica_pid: object, sig: signal.Signals, wait_for: set[str] | None,
                 wait_s: float, cmdline_contains: str) -> dict:
    replica = _pid(replica_pid, "replica_pid")
    core = find_engine_core(replica, cmdline_contains)
    at = Instant.now()
    os.kill(core, sig)
    record = FaultRecord(action, f"engine core {core} of replica {replica}", "signal",
                         {"pid": core, "replica_pid": replica, "signal": sig.name}, at)
    result = record.as_dict()
    if wait_for is not None:
        result["exited" if wait_for is _GONE else "stopped"] = _wait([core], wait_for, wait_s)
    return result


def kill_engine_core(replica_pid: int, wait_s: float = 5.0, cmdline_contains: str = ENGINE_CORE_MARKER) -> dict:
    """SIGKILL the replica's engine-core child only (the HTTP process stays up)."""
    return _signal_core("kill_engine_core", replica_pid, signal.SIGKILL, _GONE, wait_s, cmdline_contains)


def hang_engine_core(replica_pid: int, wait_s: float = 5.0, cmdline_contains: str = ENGINE_CORE_MARKER) -> dict:
    """SIGSTOP the replica's engine-core child only: the HTTP side answers, no token comes."""
    return _signal_core("hang_engine_core", replica_pid, signal.SIGSTOP, _STOPPED, wait_s, cmdline_contains)


def resume_engine_core(replica_pid: int, cmdline_contains: str = ENGINE_CORE_MARKER) -> dict:
    """SIGCONT the replica's engine-core child; a replica that is gone is reported, not an error (rollbacks)."""
    pid = _pid(replica_pid, "replica_pid")
    if _status(pid) in _GONE:
        return FaultRecord("resume_engine_core", f"replica {pid}", "signal",
                           {"replica_pid": pid, "signal": "SIGCONT", "gone": True}).as_dict()
    return _signal_core("resume_engine_core", pid, signal.SIGCONT, None, 0.0, cmdline_contains)
