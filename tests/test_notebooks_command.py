"""`lab notebooks`: JupyterLab on notebooks/ at 127.0.0.1, root or not, really started and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lab.notebooks_cli import jupyter_command
from tests.gateway.fakes import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_root_gets_allow_root_and_nobody_else_does() -> None:
    as_root = jupyter_command(Path("/p/notebooks"), 8899, as_root=True, extra=["--no-browser"])
    as_user = jupyter_command(Path("/p/notebooks"), 8899, as_root=False, extra=["--no-browser"])
    assert as_root[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--allow-root" in as_root and "--allow-root" not in as_user
    assert as_root == [*as_user[:-1], "--allow-root", "--no-browser"]  # the user's options come last
    for command in (as_root, as_user):
        assert "--ServerApp.ip=127.0.0.1" in command and "--ServerApp.port=8899" in command
        assert "--ServerApp.port_retries=0" in command  # a taken port is an error, never a silent other port
        assert "--ServerApp.root_dir=/p/notebooks" in command


def test_options_after_the_double_dash_reach_jupyter(capsys: pytest.CaptureFixture) -> None:
    from lab.cli import main

    assert main(["notebooks", "--port", "8899", "--print-command", "--", "--no-browser", "--ServerApp.x=1"]) == 0
    command = capsys.readouterr().out.split()
    assert command[-2:] == ["--no-browser", "--ServerApp.x=1"]
    assert f"--ServerApp.root_dir={ROOT / 'notebooks'}" in command


def test_lab_notebooks_starts_jupyterlab_on_localhost_and_stops(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    port, token = free_port(), "test-token-0123456789"
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # no user config, no runtime files in $HOME
    server = subprocess.Popen([sys.executable, "-m", "lab", "notebooks", "--port", str(port), "--", "--no-browser"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"jupyter exited with {server.returncode}: {server.stdout.read()[-3000:]}"
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api", timeout=2)
                if reply.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "jupyter did not answer /api within 90 s"
            time.sleep(0.3)
        assert "version" in reply.json()
        listing = httpx.get(f"http://127.0.0.1:{port}/api/contents", params={"token": token}, timeout=10).json()
        assert "00_quickstart.ipynb" in {item["name"] for item in listing["content"]}  # it serves notebooks/
        assert httpx.get(f"http://127.0.0.1:{port}/api/contents", timeout=10).status_code == 403  # token required
    finally:
        server.terminate()
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert f"JupyterLab: http://127.0.0.1:{port}/lab?token={token}" in out
    assert ("running as root" in out) == (os.geteuid() == 0)
