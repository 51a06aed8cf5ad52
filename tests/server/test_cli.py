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


def test_engine_flag_is_documented_with_its_choices():
    result = run_serve("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "--engine {lab,hf,hf-cb}" in text and "--hf-batch-size" in text
    assert "transformers" in text and "generate()" in text and "static batches" in text


def test_unknown_engine_exits_2_naming_the_choices():
    result = run_serve("--engine", "vllm", "--port", str(free_port()))
    assert result.returncode == 2 and "--engine" in result.stderr and "'lab', 'hf'" in result.stderr


def test_paging_flags_with_the_hf_engine_exit_2_naming_them():
    result = run_serve("--engine", "hf", "--num-gpu-blocks", "8", "--max-num-seqs", "4", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--num-gpu-blocks" in result.stderr and "--max-num-seqs" in result.stderr and "--engine hf" in result.stderr


def test_hf_batch_size_needs_the_hf_engine_and_a_positive_value():
    result = run_serve("--hf-batch-size", "4", "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-batch-size applies to --engine hf only" in result.stderr
    result = run_serve("--engine", "hf", "--hf-batch-size", "0", "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-batch-size must be >= 1, got 0" in result.stderr


def test_engine_core_flag_is_documented_and_refused_with_the_hf_engine():
    text = " ".join(run_serve("--help").stdout.split())
    assert "--engine-core {process,thread}" in text and "its own process" in text and "GIL" in text
    result = run_serve("--engine", "hf", "--engine-core", "thread", "--port", str(free_port()))
    assert result.returncode == 2 and "--engine-core" in result.stderr and "--engine hf" in result.stderr
    result = run_serve("--engine-core", "fork", "--port", str(free_port()))
    assert result.returncode == 2 and "'process', 'thread'" in result.stderr


def test_before_tuning_flags_reach_engine_args_and_the_hf_engines_refuse_eager():
    import argparse

    from lab.server.cli import ENGINE_FLAGS, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--enforce-eager", "--no-enable-chunked-prefill", "--scheduling-policy", "fcfs"])
    given = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name) is not None and name != "model"}
    assert given == {"enforce_eager": True, "enable_chunked_prefill": False, "scheduling_policy": "fcfs"}
    assert parser.parse_args(["serve"]).enforce_eager is None  # left out: EngineArgs' default (graphs on a GPU)
    result = run_serve("--engine", "hf-cb", "--enforce-eager", "--port", str(free_port()))
    assert result.returncode == 2 and "--enforce-eager" in result.stderr and "--engine hf-cb" in result.stderr
