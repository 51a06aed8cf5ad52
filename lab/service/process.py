"""One supervised process: its own session, one log file, a readiness probe, a stop that reaches its children.

Contract:
- `ManagedProcess(name, kind, command, port, log_path, ready_url, env, host)`: `command` is final (its port
  filled in); `host` is where it listens (127.0.0.1, or a netns replica's namespace address). `start()`
  launches it with `start_new_session=True`, so it leads its own process group (its pid is the group id):
  `signal(sig)` reaches the whole group (a `lab serve` replica's engine-core child too), and a Ctrl-C at
  the terminal reaches only the supervisor, which then stops everything in order. stdout
  and stderr go to `log_path`, truncated on the first start and appended to (after a marker line) on
  each restart. `pids` lists every pid it started.
- `exit_code()` is None while the leader runs; `is_ready()` is one `GET ready_url` answering 200.
- `terminate()` sends SIGTERM to the group (a replica drains); `wait_or_kill(deadline)` waits for the
  leader until `deadline` (time.monotonic()), then SIGKILLs the group; either way it ends with a SIGKILL
  to the group, so children that outlived their leader (an engine core after its server was SIGKILLed)
  go too. `stop(timeout_s)` is both.
- `wait_ready(processes, timeout_s)` blocks until each answers ready, or raises `LabError` naming the one
  that exited (with its exit status and log tail) or the ones still not ready at the timeout.
- `pid_alive(pid)`: running (not a zombie). `free_port()` asks the OS for a free port of 127.0.0.1;
  `port_is_free(port)` says whether a server could listen there now (SO_REUSEADDR, as servers bind, so a
  port in TIME_WAIT counts as free); `choose_port(fixed, field, taken)` is the port a process gets (a
  busy fixed port is a `LabError` naming its field). `check_binary(program, what)`: on PATH or executable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from lab.errors import LabError

HOST = "127.0.0.1"
PROBE_TIMEOUT_S = 1.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_port(fixed: int | None, field: str, taken: set[int]) -> int:
    """`fixed` if free (else `LabError` naming `field`), or a free port; never one already in `taken`."""
    if fixed is not None:
        if fixed in taken or not port_is_free(fixed):
            raise LabError(f"{field}: port {fixed} on {HOST} is busy (something listens there); choose another "
                           "or leave it out for a free one")
        taken.add(fixed)
        return fixed
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


def check_binary(program: str, what: str) -> None:
    if shutil.which(program) is None and not (Path(program).is_file() and os.access(program, os.X_OK)):
        raise LabError(f"{what}: {program!r} is not on PATH nor an executable file")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when `GET url` answers 200 within `timeout_s`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def engine_dead(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The reason when `lab serve` at `base_url` says its engine can never serve again (`GET /health`: 503 with
    the error code `engine_dead`, e.g. its engine-core process died); None otherwise (alive, busy, hung or gone)."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as error:
        if error.code != 503:
            return None
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            return None
        detail = body.get("error", body) if isinstance(body, dict) else {}
        if isinstance(detail, dict) and detail.get("code") == "engine_dead":
            return str(detail.get("message", "engine_dead"))
        return None
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ManagedProcess:
    def __init__(self, name: str, kind: str, command: tuple[str, ...], port: int, log_path: Path, ready_url: str,
                 env: Mapping[str, str] | None = None, host: str = HOST) -> None:
        self.name, self.kind, self.command, self.port, self.host = name, kind, tuple(command), port, host
        self.log_path, self.ready_url, self.env = log_path, ready_url, dict(env or {})
        self.popen: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.started_at = 0.0  # time.time() of the last start
        self.started_monotonic = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            raise LabError(f"{self.name} is running already (pid {self.popen.pid})")
        restart = self.popen is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if restart else "wb") as log:
            if restart:
                log.write(f"\n--- lab.service: restarting {self.name} at {time.strftime('%H:%M:%S')} ---\n".encode())
                log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, start_new_session=True)
            except OSError as error:
                raise LabError(f"{self.name}: cannot run {self.command[0]!r}: {error}") from None
        self.pids.append(self.popen.pid)
        self.started_at, self.started_monotonic = time.time(), time.monotonic()

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def is_ready(self) -> bool:
        return self.exit_code() is None and probe(self.ready_url)

    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group (the pid leads it); nothing when it is gone."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty: every member exited

    def terminate(self) -> None:
        if self.exit_code() is None:
            self.signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.signal(signal.SIGKILL)  # children that outlived the leader, or the leader that would not drain
        self.popen.wait()

    def stop(self, timeout_s: float) -> None:
        self.terminate()
        self.wait_or_kill(time.monotonic() + timeout_s)

    def failure(self) -> str:
        return (f"{self.kind} {self.name!r} exited with status {self.exit_code()} before it was ready; "
                f"last lines of {self.log_path}:\n{tail(self.log_path)}")


def wait_ready(processes: Iterable[ManagedProcess], timeout_s: float, poll_s: float = 0.2) -> None:
    waiting = list(processes)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for p in list(waiting):
            if p.exit_code() is not None:
                raise LabError(p.failure())
            if p.is_ready():
                waiting.remove(p)
        if waiting and time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{tail(p.log_path)}" for p in waiting)
            raise LabError(f"not ready after {timeout_s:g} s: {', '.join(p.name for p in waiting)} "
                           f"(no 200 from {waiting[0].ready_url})\n{tails}")
        if waiting:
            time.sleep(poll_s)
