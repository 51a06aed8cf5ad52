"""MIG emulation through CUDA MPS (`lab.gpu.mps`, `lab serve --emulate-mig-with mps`).

On CPU: the share arithmetic, the card lookup from NVML's answer, the refusals, and the daemon's lifecycle
logic against a stand-in control program (a shell script that behaves as `nvidia-cuda-mps-control` does for
`-d` and `quit`: it only exercises the lab's start/wait/stop code, not MPS). On a GPU machine with the real
daemon: a replica served as an MPS client says so and answers.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from lab.errors import LabError
from lab.gpu.mig_emulation import enter_mps_share
from lab.gpu.mps import (
    PERCENTAGE_ENV, PIPE_ENV, MpsDaemon, active_thread_percentage, check_mps_client, control_binary,
    gpu_model_before_cuda,
)
from lab.gpu.nvml import GpuInfo

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559.0, False, 0)
A100 = GpuInfo(1, "NVIDIA A100-SXM4-80GB", 81920.0, False, 0)


@pytest.mark.parametrize(("sms", "full", "expected"), [(16, 132, 13), (60, 132, 46), (132, 132, 100), (14, 108, 13)])
def test_percentage_rounds_up_to_at_least_the_profiles_sms(sms, full, expected):
    # 16/132 = 12.12 %: 12 % would give 15.8 SMs, fewer than the 1g profile's 16
    assert active_thread_percentage(sms, full) == expected
    assert expected / 100 * full >= sms


@pytest.mark.parametrize(("sms", "full"), [(0, 132), (133, 132)])
def test_percentage_refuses_a_share_that_is_none_or_more_than_the_card(sms, full):
    with pytest.raises(LabError, match="is not a share of the card"):
        active_thread_percentage(sms, full)


def test_the_share_is_set_from_the_cards_table(tmp_path):
    (tmp_path / "control").touch()
    environ = {PIPE_ENV: str(tmp_path)}
    emulation = enter_mps_share("1g", environ, gpus=[H100])
    assert environ[PERCENTAGE_ENV] == "13"  # 1g.10gb on an H100: 16 of 132 SMs
    assert emulation.slice.label == "emulated 1g.10gb (mps)" and emulation.green_context is None
    assert emulation.slice.memory_fraction == pytest.approx(1 / 8)


def test_the_card_is_the_visible_one_or_refused_when_ambiguous():
    assert gpu_model_before_cuda({"CUDA_VISIBLE_DEVICES": "1"}, [H100, A100])[0] == A100.name
    assert gpu_model_before_cuda({}, [H100, GpuInfo(1, H100.name, H100.memory_total_mib, False, 0)])[0] == H100.name
    with pytest.raises(LabError, match="several GPU models"):
        gpu_model_before_cuda({}, [H100, A100])
    with pytest.raises(LabError, match="NVML sees no GPU"):
        gpu_model_before_cuda({}, [])


def test_a_client_needs_a_running_daemon(tmp_path):
    with pytest.raises(LabError, match=f"needs {PIPE_ENV}"):
        check_mps_client({})
    with pytest.raises(LabError, match="no MPS daemon listens"):
        check_mps_client({PIPE_ENV: str(tmp_path)})
    (tmp_path / "control").touch()
    check_mps_client({PIPE_ENV: str(tmp_path)})


def test_a_missing_control_binary_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabError, match="nvidia-cuda-mps-control"):
        control_binary()


STAND_IN = """#!/bin/sh
# `-d`: "start" (create the control pipe as the daemon does); stdin "quit": "stop" (remove it)
if [ "$1" = "-d" ]; then touch "$CUDA_MPS_PIPE_DIRECTORY/control"; echo started > "$CUDA_MPS_LOG_DIRECTORY/control.log"; exit 0; fi
read line; [ "$line" = "quit" ] && rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
"""


def test_daemon_lifecycle_uses_its_own_directories(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(STAND_IN)
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    daemon = MpsDaemon.start(tmp_path / "mps")
    assert daemon.running() and daemon.client_env()[PIPE_ENV] == str(tmp_path / "mps" / "pipe")
    with pytest.raises(LabError, match="already serves"):
        MpsDaemon.start(tmp_path / "mps")
    daemon.stop()
    assert not daemon.running()


def test_serve_refuses_mps_without_a_daemon(monkeypatch):
    monkeypatch.delenv(PIPE_ENV, raising=False)
    result = subprocess.run([sys.executable, "-m", "lab", "serve", "--model", "tiny", "--emulate-mig", "1g",
                             "--emulate-mig-with", "mps", "--admin-key-hash", "sha256:" + "0" * 64],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"needs {PIPE_ENV}" in result.stderr  # refused for the daemon, not for the admin key (MPS allows reload)


needs_mps = pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is None or not shutil.which("nvidia-smi"),
                               reason="needs a CUDA GPU and the MPS control daemon (runs on a GPU machine that has it)")


@needs_mps
def test_an_mps_replica_serves_and_says_so(tmp_path):
    import httpx

    from tests.server.conftest import launch  # the suite's real-replica launcher

    daemon = MpsDaemon.start(tmp_path / "mps")
    try:
        os.environ.update(daemon.client_env())
        replica = launch("--device", "cuda", "--emulate-mig", "1g", "--emulate-mig-with", "mps", tmp_dir=tmp_path)
        try:
            replica.wait_ready()
            card = httpx.get(f"{replica.url}/v1/models").json()["data"][0]
            assert card["partition"].startswith("emulated 1g.") and card["partition"].endswith("(mps)"), card
            answer = httpx.post(f"{replica.url}/v1/completions",
                                json={"model": "tiny", "prompt": "hello", "max_tokens": 4}, timeout=60).json()
            assert answer["usage"]["completion_tokens"] == 4, answer
            assert "(mps)" in httpx.get(f"{replica.url}/metrics").text
        finally:
            replica.stop()
    finally:
        for key in daemon.client_env():
            os.environ.pop(key, None)
        daemon.stop()
