"""Emulated MIG slices: the profile -> (SMs, memory fraction) arithmetic by hand, the refusals, the labels.

The CUDA path (a green context of the profile's SMs) is tested last and skipped without CUDA green contexts.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from lab.errors import LabError
from lab.gpu.mig_emulation import (
    check_emulation_possible, check_profile_token, emulated_slice, enter_green_context, partition_label,
)
from lab.gpu.mig_profiles import profile_table
from tests.server.conftest import ROOT


@pytest.mark.parametrize("gpu, token, profile, sms, fraction", [
    ("H100-80GB", "1g.10gb", "1g.10gb", 16, 1 / 8),  # 1 of 8 memory slices: 10 of 80 GB
    ("H100-80GB", "1g", "1g.10gb", 16, 1 / 8),  # the shorthand takes the fewest memory slices
    ("H100-80GB", "2g", "2g.20gb", 32, 2 / 8),
    ("H100-80GB", "3g", "3g.40gb", 60, 4 / 8),  # 3 compute slices own 4 memory slices
    ("H100-80GB", "7g", "7g.80gb", 132, 8 / 8),
    ("H200-141GB", "1g", "1g.18gb", 16, 1 / 8),
    ("A100-40GB", "1g.5gb", "1g.5gb", 14, 1 / 8),
])
def test_profile_gives_its_sm_count_and_memory_share(gpu, token, profile, sms, fraction):
    emulated = emulated_slice(token, profile_table(gpu))
    assert (emulated.profile, emulated.sm_count, emulated.memory_fraction) == (profile, sms, fraction)
    assert emulated.label == f"emulated {profile}"


def test_a_profile_name_of_another_card_is_refused_on_this_one():
    with pytest.raises(LabError, match="unknown MIG profile '1g.10gb' for H200-141GB"):
        emulated_slice("1g.10gb", profile_table("H200-141GB"))


def test_profile_tokens_are_checked_against_every_table():
    check_profile_token("1g.10gb")
    check_profile_token("3g")
    with pytest.raises(LabError, match="--emulate-mig: unknown MIG profile '5g.50gb'"):
        check_profile_token("5g.50gb")


def test_cpu_is_refused_no_emulation_without_cuda():
    for device, cuda in (("cpu", True), ("auto", False)):
        with pytest.raises(LabError, match="needs a CUDA device: there is no emulation without CUDA"):
            check_emulation_possible(device, cuda, True)
    with pytest.raises(LabError, match="--device cuda:1: no CUDA device"):
        check_emulation_possible("cuda:1", False, True)


def test_a_pytorch_without_green_contexts_is_refused_saying_so():
    with pytest.raises(LabError, match="green contexts, which this PyTorch lacks"):
        check_emulation_possible("auto", True, False)
    check_emulation_possible("cuda", True, True)  # what can run, runs


def test_partition_label_says_emulated_mig_or_nothing():
    assert partition_label("emulated 1g.10gb", {"LAB_MIG_PROFILE": "3g.40gb"}) == "emulated 1g.10gb"
    assert partition_label(None, {"LAB_MIG_PROFILE": "3g.40gb", "CUDA_VISIBLE_DEVICES": "MIG-x"}) == "MIG 3g.40gb"
    assert partition_label(None, {"CUDA_VISIBLE_DEVICES": "MIG-abc"}) == "MIG (profile unknown)"
    assert partition_label(None, {"CUDA_VISIBLE_DEVICES": "0"}) is None


def _serve(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "serve", "--model", "tiny", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_serve_refuses_emulation_on_cpu_before_starting():
    result = _serve("--device", "cpu", "--emulate-mig", "1g.10gb")
    assert result.returncode == 2 and "no emulation without CUDA" in result.stderr


@pytest.mark.parametrize("flags, says", [
    (("--emulate-mig", "9g"), "unknown MIG profile '9g'"),
    (("--emulate-mig", "1g", "--engine-core", "thread"), "engine core process"),
    (("--emulate-mig", "1g", "--gpu-memory-utilization", "0.5"), "leave out --gpu-memory-utilization"),
    (("--emulate-mig", "1g", "--admin-key-hash", "sha256:" + "0" * 64), "--admin-key-hash"),
])
def test_serve_refuses_emulation_flags_that_cannot_hold(flags, says):
    result = _serve("--device", "cpu", *flags)
    assert result.returncode == 2 and says in result.stderr


def test_server_config_refuses_emulation_outside_the_engine_core_process():
    from lab.engine.args import EngineArgs
    from lab.server.runner import ServerConfig

    with pytest.raises(ValueError, match="--emulate-mig needs --engine lab"):
        ServerConfig(EngineArgs(), "tiny", engine_core="thread", emulate_mig="1g")
    with pytest.raises(ValueError, match="--emulate-mig needs --engine lab"):
        ServerConfig(EngineArgs(), "tiny", engine="hf", emulate_mig="1g")


def test_models_and_metrics_name_the_partition():
    from fastapi.testclient import TestClient

    from lab.server.app import build_app

    def no_backend():
        raise RuntimeError("not needed here")

    with TestClient(build_app("tiny", no_backend, partition="MIG 1g.10gb")) as client:
        assert client.get("/v1/models").json()["data"][0]["partition"] == "MIG 1g.10gb"
        assert 'lab:partition_info{model_name="tiny",partition="MIG 1g.10gb"} 1.0' in client.get("/metrics").text
    with TestClient(build_app("tiny", no_backend)) as client:  # a whole device: no label at all
        assert "partition" not in client.get("/v1/models").json()["data"][0]
        assert "lab:partition_info" not in client.get("/metrics").text


def _green_contexts() -> bool:
    try:
        import torch
        from torch.cuda import green_contexts
    except ImportError:
        return False
    return torch.cuda.is_available() and green_contexts.SUPPORTED


@pytest.mark.skipif(not _green_contexts(), reason="needs CUDA with torch.cuda.green_contexts (runs on an H100)")
def test_a_green_context_holds_compute_bound_work_to_the_profiles_sms():
    """In a fresh process: a big matmul on a 1g green context takes several times the whole card's time."""
    code = (
        "import time, torch\n"
        "from lab.gpu.mig_emulation import enter_green_context\n"
        "def bench():\n"
        "    a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)\n"
        "    s = torch.cuda.Stream()  # a stream made after the context: it must belong to it\n"
        "    for stream in (torch.cuda.current_stream(), s):\n"
        "        with torch.cuda.stream(stream):\n"
        "            a @ a; torch.cuda.synchronize(); t = time.perf_counter()\n"
        "            for _ in range(10): a @ a\n"
        "            torch.cuda.synchronize(); yield time.perf_counter() - t\n"
        "import sys\n"
        "if sys.argv[1] == 'slice':\n"
        "    e = enter_green_context('1g', 0); print('SMS', e.slice.sm_count, torch.cuda.get_device_properties(0).multi_processor_count)\n"
        "print('T', *bench())\n"
    )
    times = {}
    for mode in ("full", "slice"):
        out = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, check=True).stdout
        times[mode] = [float(x) for x in next(line for line in out.splitlines() if line.startswith("T")).split()[1:]]
        if mode == "slice":
            sms, full_sms = (int(x) for x in next(l for l in out.splitlines() if l.startswith("SMS")).split()[1:])
    expected = full_sms / sms  # ~8x on an H100 (16 of 132 SMs); demand at least half of it on both streams
    for full_s, slice_s in zip(times["full"], times["slice"]):
        assert slice_s / full_s > expected / 2, (times, expected)


@pytest.mark.skipif(not _green_contexts(), reason="needs CUDA with torch.cuda.green_contexts (runs on an H100)")
def test_an_emulated_replica_serves_and_says_so(tmp_path):
    import httpx

    from tests.server.conftest import launch

    replica = launch("--device", "cuda", "--emulate-mig", "1g", tmp_dir=tmp_path)
    try:
        replica.wait_ready()
        card = httpx.get(f"{replica.url}/v1/models").json()["data"][0]
        assert card["partition"].startswith("emulated 1g.")
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 4}
        assert httpx.post(f"{replica.url}/v1/completions", json=body, timeout=60).status_code == 200
        assert "emulated 1g." in httpx.get(f"{replica.url}/metrics").text
    finally:
        replica.stop()
