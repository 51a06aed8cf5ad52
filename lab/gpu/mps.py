"""CUDA MPS as the second way to emulate MIG slices: each replica an MPS client held to a share of the SMs.

Contract:
- `active_thread_percentage(sm_count, full_sm_count)`: the `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` that gives a
  client at least a profile's SMs (MPS turns the percentage into whole SMs; rounding up never gives fewer).
- `MpsDaemon.start(root)` starts `nvidia-cuda-mps-control -d` with its pipe and log directories under `root`
  (not the system's /tmp/nvidia-mps, so it never joins or stops a daemon someone else runs) and waits, bounded,
  for its control pipe; `client_env()` is what a replica's environment needs to join it; `stop()` sends `quit`
  and waits for the daemon to go. A missing binary or a daemon that does not come up is a `LabError` naming it.
- `check_mps_client(environ)` (for `lab serve --emulate-mig-with mps`): the replica's environment names the pipe
  directory of a running daemon, else a `LabError` saying how to start one.
- `gpu_model_before_cuda(environ, gpus=None)`: the card's (NVML name, MiB) read without creating a CUDA context, because
  the percentage must be in the environment before the client's context exists.

Why MPS beside green contexts: MPS is per process, so any thread may step and hot reload still works; it also
needs a daemon, which a container may not ship. What neither shows: MIG's split of L2 and memory bandwidth
(`lab.gpu.mig_emulation.CANNOT_SHOW`). The daemon does not change the card's settings (compute mode stays
as it is); quitting it returns the card to plain time-slicing between processes.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.gpu.nvml import GpuInfo, nvml_session

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
PERCENTAGE_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
START_TIMEOUT_S = 10.0


def active_thread_percentage(sm_count: int, full_sm_count: int) -> int:
    if not 0 < sm_count <= full_sm_count:
        raise LabError(f"MPS share: {sm_count} SMs of a {full_sm_count}-SM card is not a share of the card")
    return min(100, math.ceil(100 * sm_count / full_sm_count))


def control_binary() -> str:
    path = shutil.which(CONTROL)
    if path is None:
        raise LabError(f"MPS emulation needs {CONTROL} (the NVIDIA driver's MPS control daemon) on PATH; this machine "
                       "has none: emulate with green contexts instead (--emulate-mig-with green-context)")
    return path


@dataclass
class MpsDaemon:
    pipe_dir: Path
    log_dir: Path

    @classmethod
    def start(cls, root: Path, timeout_s: float = START_TIMEOUT_S) -> MpsDaemon:
        binary = control_binary()
        daemon = cls(Path(root) / "pipe", Path(root) / "log")
        daemon.pipe_dir.mkdir(parents=True, exist_ok=True)
        daemon.log_dir.mkdir(parents=True, exist_ok=True)
        if daemon.running():
            raise LabError(f"an MPS daemon already serves {daemon.pipe_dir}; stop it or start under another root")
        # `-d` forks the daemon and returns at once; the control pipe appears when it listens.
        done = subprocess.run([binary, "-d"], env={**os.environ, **daemon._env()}, capture_output=True, text=True,
                              timeout=timeout_s)
        if done.returncode != 0:
            raise LabError(f"{CONTROL} -d failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
        deadline = time.monotonic() + timeout_s
        while not daemon.running():
            if time.monotonic() > deadline:
                raise LabError(f"the MPS daemon did not open {daemon.pipe_dir / 'control'} within {timeout_s:.0f} s; "
                               f"its log: {daemon.log_dir / 'control.log'}")
            time.sleep(0.05)
        return daemon

    def _env(self) -> dict[str, str]:
        return {PIPE_ENV: str(self.pipe_dir), LOG_ENV: str(self.log_dir)}

    def running(self) -> bool:
        return (self.pipe_dir / "control").exists()

    def client_env(self) -> dict[str, str]:
        """What a replica needs to join this daemon; its share (`PERCENTAGE_ENV`) is set by the replica itself."""
        return self._env()

    def stop(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if not self.running():
            return
        subprocess.run([control_binary()], input="quit\n", env={**os.environ, **self._env()}, capture_output=True,
                       text=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:  # the daemon removes its pipe as it exits
            time.sleep(0.05)


def check_mps_client(environ: dict[str, str]) -> None:
    pipe = environ.get(PIPE_ENV)
    if not pipe:
        raise LabError(f"--emulate-mig-with mps needs {PIPE_ENV} naming the pipe directory of a running MPS daemon "
                       "(lab.gpu.mps.MpsDaemon.start, or nvidia-cuda-mps-control -d with that variable set)")
    if not (Path(pipe) / "control").exists():
        raise LabError(f"--emulate-mig-with mps: no MPS daemon listens in {PIPE_ENV}={pipe} (no control pipe there)")


def gpu_model_before_cuda(environ: dict[str, str], gpus: Sequence[GpuInfo] | None = None) -> tuple[str, float]:
    """(NVML name, total MiB) of the card this process will use, without a CUDA context; `gpus`: NVML's
    answer (read here when None)."""
    if gpus is None:
        with nvml_session() as nvml:
            gpus = () if nvml is None else nvml.gpus()
    if not gpus:
        raise LabError("--emulate-mig-with mps: NVML sees no GPU, so the card's SM count is unknown")
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.isdigit() and int(visible) < len(gpus):
        gpu = gpus[int(visible)]
    elif len({(g.name, g.memory_total_mib) for g in gpus}) == 1:
        gpu = gpus[0]  # every card alike: which one CUDA picks does not change the table
    else:
        raise LabError("--emulate-mig-with mps: several GPU models and no numeric CUDA_VISIBLE_DEVICES; name the card")
    if gpu.memory_total_mib is None:
        raise LabError(f"--emulate-mig-with mps: NVML gave no memory size for {gpu.name}")
    return gpu.name, gpu.memory_total_mib
