"""`lab bench coldstart`'s measurements: an engine's start, phase by phase, each one in a fresh process.

Contract:
- `parse_variant(text) -> Variant`: a built-in name (`VARIANTS`) or `NAME=JSON`, JSON being EngineArgs
  fields plus, optionally, `"fresh_kernel_cache": true` (the child gets an empty TRITON_CACHE_DIR, so
  every kernel compiles again: what reusing compiled kernels across starts saves). LabError otherwise.
- `Scenario(model, variant, engine_args)`: one engine configuration. `model` is a preset, a checkpoint
  directory, or `disk:PRESET`: `prepare_model` writes that preset's dummy weights once as a checkpoint
  under `checkpoint_root` (`python -m lab.engine.checkpoint_writer`) and reuses the folder after that.
- `run_child(scenario, ...) -> ColdStart`: starts `python -m lab.engine.coldstart_child` with the parent's
  `time.time()` taken just before the spawn, waits for it (`timeout_s`) and reads its last JSON line; a
  child that fails is a LabError carrying its error, or the tail of its stderr. With `drop_page_cache`,
  a checkpoint folder's files leave the OS page cache first, so the weights come from the disk.
- `run_coldstart(scenarios, repeats, warmups, ...) -> list[ScenarioResult]`: `warmups` unrecorded starts
  of the first scenario (the interpreter, torch and the kernel cache warm up once, not inside whichever
  scenario runs first), then the repeats round-robin (one of each scenario, then again), so drift
  spreads evenly over the scenarios that are compared.
The record and the table of a run are `lab.bench.coldstart_report`'s.
No engine code is imported here (lab.bench does not import lab.engine): the engine is reached through
the child's command line and its JSON line, as `lab bench serve` reaches a server through HTTP.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError

EXPERIMENT = "bench-coldstart"
CHILD_MODULE = "lab.engine.coldstart_child"
WRITER_MODULE = "lab.engine.checkpoint_writer"
DISK_PREFIX = "disk:"  # --model disk:PRESET: the preset's dummy weights, written once as a checkpoint
STDERR_TAIL_CHARS = 2000
# Built-in variants: EngineArgs overrides beside today's path ("default"), one reduction each.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},  # today's path: safetensors opened on the device, every graph bucket captured at start
    "load-cpu": {"load_format": "cpu"},  # read each tensor to host memory, then copy: the plain path
    "load-overlap": {"load_format": "overlap"},  # reader thread + pinned buffers + side-stream copies
    "eager": {"enforce_eager": True},  # no graph capture at all (what capture costs; decode gets slower)
    "no-mixed-graphs": {"mixed_cuda_graphs": False},  # decode graphs only
    "few-graphs": {"cuda_graph_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256]},  # 9 decode buckets, not 20
    "cold-kernels": {"fresh_kernel_cache": True},  # every Triton kernel compiles again
}


@dataclass(frozen=True)
class Variant:
    name: str
    engine_args: dict[str, Any] = field(default_factory=dict)
    fresh_kernel_cache: bool = False


@dataclass(frozen=True)
class Scenario:
    model: str  # as given: a preset, a directory, or disk:PRESET
    variant: Variant
    engine_args: dict[str, Any]  # what the child builds EngineArgs from (model resolved)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.variant.name}"

    @property
    def checkpoint_dir(self) -> Path | None:
        path = Path(self.engine_args["model"])
        return path if path.is_dir() else None


@dataclass(frozen=True)
class ColdStart:
    """One child's measurement: the phases (seconds, in order), start -> ready and -> first token."""

    phases: dict[str, float]
    ready_s: float
    total_s: float
    wall_s: float  # spawn -> the child's exit, seen by the parent
    facts: dict[str, Any]  # device_name, weight_bytes, graph sizes, ...


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    runs: tuple[ColdStart, ...]

    def phase_names(self) -> list[str]:
        return merged_order([list(run.phases) for run in self.runs])

    def median(self, phase: str) -> float | None:
        values = [run.phases[phase] for run in self.runs if phase in run.phases]
        return statistics.median(values) if values else None

    def metrics(self) -> dict[str, float]:
        """Medians of every phase (`<phase>_s`), of ready and total, and their spread over the repeats."""
        out = {f"{name}_s": self.median(name) for name in self.phase_names()}
        for key in ("ready_s", "total_s"):
            values = [getattr(run, key) for run in self.runs]
            out[key] = statistics.median(values)
            out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
        weight_bytes = self.runs[0].facts.get("weight_bytes")
        if weight_bytes:
            out["weight_bytes"] = float(weight_bytes)
        return out


def merged_order(orders: Sequence[list[str]]) -> list[str]:
    """Every name once, each new one placed right after the name it follows in its own list, so a phase
    only some scenarios have (weight_read) still sits where it happens (after model_build)."""
    merged: list[str] = []
    for names in orders:
        at = 0
        for name in names:
            if name in merged:
                at = merged.index(name) + 1
            else:
                merged.insert(at, name)
                at += 1
    return merged


# ---- arguments -----------------------------------------------------------------------------
def parse_json_object(option: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"{option} is not valid JSON ({exc.msg} at position {exc.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise LabError(f"{option} must be a JSON object, got {text!r}")
    return value


def parse_variant(text: str) -> Variant:
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep:
        if name not in VARIANTS:
            raise LabError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)} or NAME=JSON "
                           "(EngineArgs fields, e.g. 'lean={\"load_format\": \"overlap\"}')")
        overrides = dict(VARIANTS[name])
    else:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise LabError(f"a variant name is letters, digits, '_', '.' or '-', got {name!r} in {text!r}")
        overrides = parse_json_object(f"--variant {name}", spec)
    fresh = overrides.pop("fresh_kernel_cache", False)
    if not isinstance(fresh, bool):
        raise LabError(f"variant {name!r}: fresh_kernel_cache must be true or false, got {fresh!r}")
    return Variant(name, overrides, fresh)


def build_scenarios(models: Sequence[str], variants: Sequence[Variant], engine_args: dict[str, Any],
                    resolve: Callable[[str], str] = lambda model: model) -> list[Scenario]:
    """Every model with every variant; `resolve` turns disk:PRESET into its checkpoint folder."""
    if not models or not variants:
        raise LabError("a cold-start run needs at least one --model and one --variant")
    labels = [f"{m}/{v.name}" for m in models for v in variants]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise LabError(f"each model/variant pair runs once per repeat; given twice: {', '.join(repeated)}")
    return [Scenario(model, variant, {**engine_args, "model": resolve(model), **variant.engine_args})
            for model in models for variant in variants]


# ---- checkpoints on disk -------------------------------------------------------------------
def prepare_model(model: str, checkpoint_root: Path, *, seed: int = 0, hf_overrides: dict | None = None,
                  timeout_s: float = 1800.0) -> str:
    """`model` as the engine takes it: disk:PRESET becomes a checkpoint folder, written if absent."""
    if not model.startswith(DISK_PREFIX):
        return model
    preset = model[len(DISK_PREFIX):]
    overrides = json.dumps(hf_overrides or {}, sort_keys=True)
    suffix = re.sub(r"[^A-Za-z0-9]+", "-", overrides).strip("-")
    path = checkpoint_root / (f"{preset}-seed{seed}" + (f"-{suffix}" if hf_overrides else ""))
    if path.is_dir():
        return str(path)  # the writer renames a finished folder into place: present means complete
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", WRITER_MODULE, preset, str(path), "--seed", str(seed), "--hf-overrides", overrides]
    done = _run(command, timeout_s, f"writing a checkpoint of {preset!r}")
    if done.returncode != 0:
        raise LabError(f"writing a checkpoint of {preset!r} failed: {_tail(done.stderr)}")
    return str(path)


def drop_page_cache(folder: Path) -> bool:
    """Evict the folder's files from the OS page cache (POSIX_FADV_DONTNEED; no root needed). False where the
    platform cannot, so the record says the read came from memory."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped: write them back first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


# ---- one child -----------------------------------------------------------------------------
def run_child(scenario: Scenario, *, timeout_s: float = 600.0, drop_cache: bool = False) -> ColdStart:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="lab-coldstart-triton-") as kernel_cache:
        if scenario.variant.fresh_kernel_cache:
            env["TRITON_CACHE_DIR"] = kernel_cache
        if drop_cache and scenario.checkpoint_dir is not None:
            drop_page_cache(scenario.checkpoint_dir)
        spawn_time = time.time()
        command = [sys.executable, "-m", CHILD_MODULE, "--engine-args", json.dumps(scenario.engine_args),
                   "--spawn-time", repr(spawn_time)]
        done = _run(command, timeout_s, f"the cold start of {scenario.label}", env=env)
        wall_s = time.time() - spawn_time
    line = _last_json_line(done.stdout)
    if line is not None and "error" in line:
        raise LabError(f"{scenario.label}: the engine did not start: {line['error']}")
    if done.returncode != 0 or line is None:
        raise LabError(f"{scenario.label}: the child exited with status {done.returncode} without a result: "
                       f"{_tail(done.stderr)}")
    facts = {k: v for k, v in line.items() if k not in ("phases", "ready_s", "total_s")}
    return ColdStart(dict(line["phases"]), float(line["ready_s"]), float(line["total_s"]), wall_s, facts)


def _run(command: list[str], timeout_s: float, what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise LabError(f"{what} took longer than {timeout_s:g} s and was stopped") from None


def _last_json_line(stdout: str) -> dict | None:
    for text in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _tail(text: str) -> str:
    text = (text or "").strip()
    return ("..." + text[-STDERR_TAIL_CHARS:]) if len(text) > STDERR_TAIL_CHARS else (text or "(no stderr)")


# ---- the run -------------------------------------------------------------------------------
def check_counts(repeats: int, warmups: int) -> None:
    if repeats < 1:
        raise LabError(f"--repeats must be >= 1, got {repeats}")
    if warmups < 0:
        raise LabError(f"--warmups must be >= 0, got {warmups}")


def run_coldstart(scenarios: Sequence[Scenario], repeats: int, *, warmups: int = 1, timeout_s: float = 600.0,
                  drop_cache: bool = False, progress: Callable[[str], None] | None = None,
                  on_run: Callable[[Scenario, int, ColdStart], None] | None = None) -> list[ScenarioResult]:
    check_counts(repeats, warmups)
    if not scenarios:
        raise LabError("no scenario to run")
    say = progress or (lambda text: None)
    for i in range(warmups):
        say(f"warm-up {i + 1}/{warmups}: {scenarios[0].label}")
        run_child(scenarios[0], timeout_s=timeout_s, drop_cache=drop_cache)
    runs: dict[int, list[ColdStart]] = {i: [] for i in range(len(scenarios))}
    for repeat in range(repeats):
        for i, scenario in enumerate(scenarios):
            run = run_child(scenario, timeout_s=timeout_s, drop_cache=drop_cache)
            say(f"repeat {repeat + 1}/{repeats} {scenario.label}: ready {run.ready_s:.2f} s, "
                f"first token {run.total_s:.2f} s")
            runs[i].append(run)
            if on_run is not None:  # e.g. append it to a file now: a run cut short keeps what it measured
                on_run(scenario, repeat, run)
    return [ScenarioResult(scenario, tuple(runs[i])) for i, scenario in enumerate(scenarios)]
