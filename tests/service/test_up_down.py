"""`lab up` / `lab down` as a user runs them: real commands, real processes; what is left is checked by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.cli import main
from lab.errors import LabError
from lab.service.daemon import stop_service
from lab.service.state import read_state
from lab.service.supervisor import Service
from tests.service.helpers import DRILL_RULES, GATEWAY, UPSTREAM, alive, echo_spec, wait_for

LAB = (sys.executable, "-m", "lab")
ECHO = [sys.executable, str(UPSTREAM), "--port", "{port}"]


def write_spec(tmp_path: Path, **changes: object) -> Path:
    spec = {"name": "cli", "log_dir": str(tmp_path / "logs"), "ready_timeout_s": 60, "stop_timeout_s": 10,
            "replicas": [{"name": "echo", "count": 2, "command": ECHO}], "gateway": {"config": GATEWAY},
            "prometheus": {"scrape_interval_s": 1, "evaluation_interval_s": 1, "rules": str(DRILL_RULES)}, **changes}
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def lab(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout_s)


def every_pid(state_path: Path) -> list[int]:
    state = read_state(state_path)
    return [state.supervisor_pid, *(p.pid for p in state.processes)]


def test_detach_returns_once_ready_and_down_ends_every_process(tmp_path: Path) -> None:
    config = write_spec(tmp_path)
    up = lab("up", "--config", str(config), "--detach")
    assert up.returncode == 0, up.stderr
    state = read_state(tmp_path / "logs" / "state.json")
    assert (state.status, state.supervisor) == ("ready", "lab up") and state.gateway_url in up.stdout
    pids = every_pid(tmp_path / "logs" / "state.json")
    assert len(pids) == 5 and all(map(alive, pids))  # supervisor, 2 replicas, gateway, Prometheus
    down = lab("down", "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if alive(pid)] == []
    assert read_state(tmp_path / "logs" / "state.json").status == "stopped"


def test_foreground_up_stops_everything_on_sigterm(tmp_path: Path) -> None:
    state_path = tmp_path / "logs" / "state.json"
    up = subprocess.Popen([*LAB, "up", "--config", str(write_spec(tmp_path, prometheus={"enabled": False}))],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: state_path.exists() and (s := read_state(state_path)).supervisor_pid == up.pid
                 and s.status == "ready", 60, "lab up ready")
        pids = every_pid(state_path)
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    finally:
        up.kill()
    assert up.returncode == 0 and "lab up: stopped" in output, output
    assert [pid for pid in pids if alive(pid)] == []


def test_down_ends_what_a_killed_supervisor_left_behind(tmp_path: Path) -> None:
    config = write_spec(tmp_path, prometheus={"enabled": False})
    assert lab("up", "--config", str(config), "--detach").returncode == 0
    supervisor, *children = every_pid(tmp_path / "logs" / "state.json")
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not alive(supervisor), 10, "the supervisor gone")
    assert all(map(alive, children))  # its own sessions: the replicas and gateway outlive it
    down = lab("down", "--state", str(tmp_path / "logs" / "state.json"))
    assert down.returncode == 0 and "stopped; ended 3 leftover" in down.stdout, down.stdout + down.stderr
    assert [pid for pid in children if alive(pid)] == []
    assert read_state(tmp_path / "logs" / "state.json").status == "stopped"


def test_down_refuses_a_service_that_a_python_program_supervises(tmp_path: Path) -> None:
    with Service(echo_spec(tmp_path / "logs", replicas=1, gateway=False, prometheus=False)) as service:
        with pytest.raises(LabError, match="Python program"):
            stop_service(service.state_path, timeout_s=5)
        assert alive(service.replica("echo-0").pid)


def test_a_second_up_on_a_running_services_folder_is_refused(tmp_path: Path) -> None:
    with Service(echo_spec(tmp_path / "logs", replicas=1, gateway=False, prometheus=False)) as service:
        second = lab("up", "--config", str(write_spec(tmp_path)))  # the same log_dir
        assert second.returncode == 2 and "is already running" in second.stderr, second.stderr
        assert read_state(service.state_path).status == "ready" and alive(service.replica("echo-0").pid)


def run_up(capsys: pytest.CaptureFixture, config: Path) -> tuple[int, str]:
    code = main(["up", "--config", str(config)])
    return code, capsys.readouterr().err


def test_up_names_a_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_up(capsys, write_spec(tmp_path, colour="red"))
    assert code == 2 and err.startswith("lab: error: service config: colour: unknown field; known: ")
    assert not (tmp_path / "logs").exists()  # nothing started, nothing written


def test_up_says_which_port_is_busy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_up(capsys, write_spec(tmp_path, gateway={"config": GATEWAY, "port": port}))
    assert code == 2 and f"gateway.port: port {port} on 127.0.0.1 is busy" in err


def test_up_says_which_binary_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    replicas = [{"name": "x", "command": ["/nowhere/server", "--port", "{port}"]}]
    code, err = run_up(capsys, write_spec(tmp_path, replicas=replicas))
    assert code == 2 and "replica 'x': '/nowhere/server' is not on PATH" in err
    code, err = run_up(capsys, write_spec(tmp_path, prometheus={"binary": "/nowhere/prometheus"}))
    assert code == 2 and "apt-get install -y prometheus" in err


def test_up_shows_the_log_of_a_replica_that_never_became_ready(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    crash = [sys.executable, "-c", "import sys; print('boom at start'); sys.exit(3)", "{port}"]
    code, err = run_up(capsys, write_spec(tmp_path, replicas=[{"name": "bad", "command": crash}]))
    assert code == 2 and "replica 'bad' exited with status 3 before it was ready" in err and "boom at start" in err
    state = read_state(tmp_path / "logs" / "state.json")
    assert state.status == "failed" and not any(alive(p.pid) for p in state.processes if p.pid)


def test_down_without_a_service_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["down", "--state", str(tmp_path / "state.json")]) == 2
    assert "no service was started there" in capsys.readouterr().err
