"""Compare CUDA allocator configurations on one workload: `compare_allocators(run_fn, configs)`.

    def engine_run(timeline):                         # module level, so a child process can import it
        with timeline.phase("load"): ...
    comparison = compare_allocators(engine_run, ("default", "expandable_segments:True"))
    comparison.run("expandable_segments:True").final.reserved_unused_fraction

Contract: `PYTORCH_CUDA_ALLOC_CONF` is read once, when CUDA initialises, so each configuration runs in a fresh
Python process (`lab.gpu.memory_child`) with the variable set ("default": the variable removed). `run_fn` is
called there with a `MemoryTimeline` on `device` and `kwargs` (JSON-able) as keyword arguments, and must be
importable by name (a module-level function, not a lambda, a closure or a notebook's `__main__`). Each `AllocatorRun` holds the final snapshot and the phase table
of its child. When the child's allocator reports its expandable-segments state and it disagrees with the
configuration asked for, the comparison raises `LabError` rather than return numbers for the wrong allocator.
On a machine without CUDA it raises `LabError` before starting anything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError
from lab.gpu.memory import MemorySnapshot
from lab.gpu.memory_child import ALLOC_CONF
from lab.gpu.memory_timeline import PhaseMemory

DEFAULT = "default"  # the allocator with PYTORCH_CUDA_ALLOC_CONF unset
_SETTING = re.compile(r"[a-z_]+:\S+")  # the first option:value; later ones may hold [..,..] lists


@dataclass(frozen=True)
class AllocatorRun:
    config: str  # "default" or the PYTORCH_CUDA_ALLOC_CONF value
    final: MemorySnapshot  # after run_fn returned
    phases: tuple[PhaseMemory, ...]
    expandable_segments: bool | None  # as the child's allocator reported it; None when this torch does not say

    @property
    def label(self) -> str:
        """The config as a metric-name part: "expandable_segments:True" -> "expandable_segments_True"."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.config)


@dataclass(frozen=True)
class AllocatorComparison:
    device: str
    runs: tuple[AllocatorRun, ...]

    def run(self, config: str) -> AllocatorRun:
        for run in self.runs:
            if run.config == config:
                return run
        raise LabError(f"no run for allocator config {config!r}; ran: {', '.join(r.config for r in self.runs)}")

    def as_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for run in self.runs:
            metrics.update(run.final.as_metrics(prefix=f"{run.label}.final."))
            for row in run.phases:
                for column, value in vars(row).items():
                    if column != "phase" and value is not None:
                        metrics[f"{run.label}.{row.phase}.{column}"] = float(value)
        return metrics


def validate_config(config: str) -> str:
    """"default", or `option:value[,option:value]` as PYTORCH_CUDA_ALLOC_CONF takes it (torch checks the rest)."""
    if config == DEFAULT or _SETTING.fullmatch(config):
        return config
    raise LabError(f"allocator config {config!r} is neither {DEFAULT!r} nor 'option:value[,option:value]' "
                   "(e.g. 'expandable_segments:True')")


def target_name(run_fn: Callable | str) -> str:
    """The `module:qualname` a child process imports `run_fn` by."""
    if isinstance(run_fn, str):
        return run_fn
    module, qualname = getattr(run_fn, "__module__", None), getattr(run_fn, "__qualname__", "")
    if module is None or module == "__main__" or "<" in qualname:
        raise LabError(f"{run_fn!r} cannot be imported by a child process: pass a module-level function "
                       "(defined in a .py module, not a lambda, a closure or a notebook cell)")
    return f"{module}:{qualname}"


def child_env(config: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop(ALLOC_CONF, None)
    if config != DEFAULT:
        env[ALLOC_CONF] = config
    # The child imports the target as this process would: give it this process's import path.
    inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + inherited)
    return env


def parse_child_output(config: str, stdout: str) -> AllocatorRun:
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise LabError(f"the {config!r} child printed no JSON result line ({error})") from None
    expandable = data.get("expandable_segments")
    asked = "expandable_segments:true" in config.replace(" ", "").lower()
    if expandable is not None and bool(expandable) != asked:
        raise LabError(f"the {config!r} child ran with expandable_segments={expandable}, not what was asked: "
                       f"{ALLOC_CONF} did not take effect (was it overridden, or CUDA initialised earlier?)")
    return AllocatorRun(config, MemorySnapshot.from_dict(data["final"]),
                        tuple(PhaseMemory(**row) for row in data["phases"]), expandable)


def compare_allocators(run_fn: Callable | str, configs: Sequence[str] = (DEFAULT, "expandable_segments:True"),
                       device: str = "cuda:0", timeout_s: float = 600.0,
                       kwargs: Mapping[str, Any] | None = None) -> AllocatorComparison:
    from lab.gpu.memory import cuda_device

    if not configs:
        raise LabError("compare_allocators needs at least one allocator config")
    configs = [validate_config(c) for c in configs]
    target = target_name(run_fn)
    try:
        cuda_device(device)
    except LabError as error:
        raise LabError(f"compare_allocators cannot run: {error}; PYTORCH_CUDA_ALLOC_CONF configures the CUDA "
                       "caching allocator, which only exists on a CUDA device") from None
    runs = []
    for config in configs:
        try:
            done = subprocess.run([sys.executable, "-m", "lab.gpu.memory_child", target, device, json.dumps(kwargs or {})],
                                  env=child_env(config), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LabError(f"the {config!r} run of {target} took longer than {timeout_s} s") from None
        if done.returncode != 0:
            raise LabError(f"the {config!r} run of {target} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        runs.append(parse_child_output(config, done.stdout))
    return AllocatorComparison(device, tuple(runs))
