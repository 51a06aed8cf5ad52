"""Start a sweep under torchrun in fresh processes and read its result back (torch-free in this process).

Contract: `run_sweep(config, nproc, work_dir, env=None, timeout_s=600) -> SweepResult` writes the config to
`work_dir/config.json`, runs `torchrun --standalone --nproc-per-node nproc -m lab.comm.worker` (one process per
GPU on nccl; CPU processes on gloo) with `env` as the whole environment (default: this process's), logs its
output to `work_dir/torchrun.log`, and returns the `SweepResult` rank 0 wrote. Each call is its own set of
processes, which is what a knob sweep needs: NCCL reads its variables when a communicator is created.
`nproc` below 2 raises `LabError` (a collective needs two ranks); so does asking nccl for more processes than
visible GPUs. `resolve_nproc(None or 0, backend)` is one process per visible GPU on nccl, 2 on gloo.
A run that fails or times out raises `LabError` with the log's last lines. "torch-free in this process" holds
for gloo; on nccl `check_nproc` asks torch how many GPUs it sees.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from lab.comm.config import SweepConfig
from lab.comm.results import SweepResult
from lab.errors import LabError

LOG_TAIL_LINES = 30


def resolve_nproc(nproc: int | None, backend: str) -> int:
    """None or 0: one process per visible GPU on nccl, 2 on gloo; otherwise `nproc`, checked."""
    if not nproc:
        if backend == "gloo":
            return 2
        import torch

        nproc = torch.cuda.device_count()
    check_nproc(nproc, backend)
    return nproc


def check_nproc(nproc: int, backend: str) -> None:
    if nproc < 2:
        raise LabError(f"nproc must be at least 2: a collective needs two ranks (got {nproc})")
    if backend == "nccl":
        import torch

        visible = torch.cuda.device_count()
        if nproc > visible:
            raise LabError(f"nccl runs one process per GPU: nproc {nproc} but {visible} GPU(s) visible "
                           "(use --backend gloo on a CPU)")


def torchrun_command(nproc: int, config_path: Path, out_path: Path) -> list[str]:
    # `--standalone` gives the ranks a private rendezvous on a free local port, so sweeps can run side by side.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "lab.comm.worker", "--config", str(config_path), "--out", str(out_path)]


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env`, with this `lab` first on PYTHONPATH so the workers run the code that launched them."""
    here = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    # torchrun sets OMP_NUM_THREADS=1 anyway, with a banner on stderr; saying it here keeps the log readable.
    return {**env, "PYTHONPATH": os.pathsep.join([here, *paths]), "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def run_sweep(config: SweepConfig, nproc: int, work_dir: Path, env: Mapping[str, str] | None = None,
              timeout_s: float = 600.0) -> SweepResult:
    check_nproc(nproc, config.backend)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path, out_path, log = work_dir / "config.json", work_dir / "result.json", work_dir / "torchrun.log"
    config_path.write_text(json.dumps(config.to_dict(), indent=1), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    command = torchrun_command(nproc, config_path, out_path)
    with log.open("w", encoding="utf-8") as handle:
        # A session of its own: on a timeout the launcher and every rank it started go down together.
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=worker_environment(os.environ if env is None else env))
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise LabError(f"the sweep ran past {timeout_s:g} s and was stopped; log {log}:\n{_tail(log)}") from None
    if code != 0 or not out_path.is_file():
        raise LabError(f"torchrun exited with status {code}; log {log}:\n{_tail(log)}")
    return SweepResult.from_dict(json.loads(out_path.read_text(encoding="utf-8")))
