"""`lab serve` flags: bad values fail fast (exit 2), a model that cannot load exits 1 saying why."""
from __future__ import annotations

import subprocess
import sys

import httpx

from tests.server.conftest import ROOT, free_port


def run_serve(*flags: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "serve", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s)


def test_bad_engine_flag_exits_2_naming_it():
    result = run_serve("--dtype", "float7", "--port", str(free_port()))
    assert result.returncode == 2
    assert "dtype must be" in result.stderr and "float7" in result.stderr


def test_hf_overrides_must_be_a_json_object():
    result = run_serve("--hf-overrides", "[1, 2]")
    assert result.returncode == 2 and "--hf-overrides" in result.stderr and "JSON object" in result.stderr


def test_model_that_fails_to_load_exits_1_saying_why(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    port = free_port()
    result = run_serve("--model", str(missing), "--port", str(port))
    assert result.returncode == 1
    assert "no-such-checkpoint" in result.stderr and "loading the model failed" in result.stderr
    try:  # and it is gone: nothing listens on its port any more
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        raise AssertionError("the failed replica still answers")
    except httpx.TransportError:
        pass
