"""Process faults on real processes, each started in its own session as `lab up` starts replicas.

The upstream replica (`lab.studies.gateway_latency.upstream`) is hung, resumed and drained; a shell with two
children shows that a kill reaches the whole group; a real `lab serve --model tiny` (module fixture, ~30 s
on a CPU) has its engine-core child found, hung, resumed and, last, killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from lab.chaos import processes
from lab.errors import LabError
from tests.chaos.services import free_port, spawn, start_upstream, stop, wait_http


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    process = start_upstream(port, tmp_path / "upstream.log")
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=timeout_s, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_hung_replica_answers_nothing_until_resumed(upstream) -> None:
    process, url = upstream
    hung = processes.hang_process_group(process.pid)
    assert hung["stopped"] is True and hung["signal"] == "SIGSTOP" and hung["backend"] == "signal"
    assert not answers(url)
    processes.resume_process_group(process.pid)
    assert answers(url, timeout_s=5.0)


def test_sigterm_lets_the_replica_exit_by_itself(upstream) -> None:
    process, _ = upstream
    record = processes.terminate_process_group(process.pid)
    assert record["signal"] == "SIGTERM"
    assert process.wait(timeout=10) == 0  # the upstream stops cleanly on SIGTERM


def test_a_kill_reaches_every_process_of_the_group(tmp_path: Path) -> None:
    shell = spawn(["sh", "-c", "sleep 60 & sleep 60 & wait"], tmp_path / "sh.log")
    try:
        deadline = time.monotonic() + 5
        while len(psutil.Process(shell.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        children = [c.pid for c in psutil.Process(shell.pid).children()]
        record = processes.kill_process_group(shell.pid)
        assert set(record["members"]) == {shell.pid, *children}
        assert record["exited"] is True
        assert shell.wait(timeout=5) == -9
    finally:
        stop(shell)


def test_each_record_carries_both_clocks(upstream) -> None:
    process, _ = upstream
    before_wall, before_mono = time.time(), time.monotonic()
    record = processes.resume_process_group(process.pid)
    assert before_wall <= record["at_wall_s"] <= time.time()
    assert before_mono <= record["at_monotonic_s"] <= time.monotonic()


def test_resuming_a_process_that_is_gone_is_reported_not_raised(tmp_path: Path) -> None:
    gone = spawn(["true"], tmp_path / "true.log")
    gone.wait()
    assert processes.resume_process_group(gone.pid)["gone"] is True


def test_the_runner_s_own_process_group_is_refused() -> None:
    with pytest.raises(LabError, match="own group"):
        processes.kill_process_group(os.getpid())


@pytest.mark.parametrize("pid", ["abc", 0, -5, True, None])
def test_a_pid_that_is_not_a_positive_integer_is_refused(pid) -> None:
    with pytest.raises(LabError, match="pid must be a positive integer"):
        processes.hang_process_group(pid)


def test_a_missing_process_is_named(tmp_path: Path) -> None:
    gone = spawn(["true"], tmp_path / "true.log")
    gone.wait()
    with pytest.raises(LabError, match=f"no process with pid {gone.pid}"):
        processes.kill_process_group(gone.pid)


def test_a_replica_without_an_engine_core_is_named(upstream) -> None:
    process, _ = upstream
    with pytest.raises(LabError, match=f"expected one child of pid {process.pid}.*found 0"):
        processes.find_engine_core(process.pid)


@pytest.fixture(scope="module")
def lab_serve(tmp_path_factory) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = spawn([sys.executable, "-m", "lab", "serve", "--model", "tiny", "--port", str(port),
                     "--log-level", "warning"], log)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", process, timeout_s=240)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_the_engine_core_is_the_spawned_child_of_lab_serve(lab_serve) -> None:
    process, _ = lab_serve
    core = processes.find_engine_core(process.pid)
    assert psutil.Process(core).ppid() == process.pid
    assert "spawn_main" in " ".join(psutil.Process(core).cmdline())


def test_hanging_the_engine_core_leaves_the_http_process_running(lab_serve) -> None:
    process, _ = lab_serve
    record = processes.hang_engine_core(process.pid)
    try:
        assert record["stopped"] is True and record["replica_pid"] == process.pid
        assert psutil.Process(record["pid"]).status() == psutil.STATUS_STOPPED
        assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED
    finally:
        processes.resume_engine_core(process.pid)
    assert psutil.Process(record["pid"]).status() != psutil.STATUS_STOPPED


def test_killing_the_engine_core_kills_that_process_only(lab_serve) -> None:  # last: it breaks the replica
    process, _ = lab_serve
    record = processes.kill_engine_core(process.pid)
    assert record["exited"] is True and record["signal"] == "SIGKILL"
    assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
    assert record["pid"] != process.pid
    assert process.poll() != -9  # the HTTP process was not SIGKILLed (it may exit by itself, not by our signal)
