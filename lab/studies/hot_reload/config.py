"""What the hot-reload study runs: the replica, the steady load, and the reloads at fixed offsets into it.

Contract:
- `ReloadStep(kind, offset_s, seed)`: one `POST /admin/reload`, `offset_s` seconds after the load starts.
  `switch` and `drain` reload the served preset with the dummy weights of `seed` (policy switch or drain);
  `corrupt` sends a broken source (`CORRUPT_KINDS`, made by `lab.studies.hot_reload.sources`) that the
  replica must refuse while it keeps serving.
- `reload_plan(switches, first_offset_s, interval_s, seeds, drain, corrupt)`: the issue's plan: `switches`
  switches alternating over `seeds`, then one drain, then one corrupt source, `interval_s` apart.
- `StudyConfig`: frozen and validated (`LabError` naming the field): a preset served with seeded dummy
  weights (a reload to another seed must change the weights, which a checkpoint directory cannot promise),
  a bounded Poisson load (`request_rate_per_s` for `load_duration_s`, at most `max_concurrency` in flight),
  steps in time order inside the load, and `window_s`, how far around each reload its tokens count as
  "around the reload" rather than steady state.
- `study_configs(models, corrupt_sources, steps, **fields)`: one config per model (the notebook's list), each
  with its corrupt source kind; a model without one is a `LabError` when the plan has a corrupt step.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.engine.presets import PRESETS
from lab.errors import LabError

STEP_KINDS = ("switch", "drain", "corrupt")
# How the refused reload's source is broken, cheapest last: a full checkpoint of the preset with one tensor
# set to NaN (refused naming the tensor; writes the whole model to disk once), a config of another architecture
# (refused naming the field), a folder that does not exist (refused before anything is read).
CORRUPT_KINDS = ("nan-checkpoint", "other-architecture", "missing")


@dataclass(frozen=True)
class ReloadStep:
    kind: str  # switch | drain | corrupt
    offset_s: float  # seconds after the load's start
    seed: int | None = None  # the preset's dummy-weight seed (switch and drain)

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise LabError(f"reload step kind must be one of {', '.join(STEP_KINDS)}, got {self.kind!r}")
        if not math.isfinite(self.offset_s) or self.offset_s < 0:
            raise LabError(f"reload step offset_s must be a finite number >= 0, got {self.offset_s!r}")
        if self.kind == "corrupt" and self.seed is not None:
            raise LabError("a corrupt reload step takes no seed: its source is the broken one")
        if self.kind != "corrupt" and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise LabError(f"a {self.kind} reload step needs a seed (an integer >= 0), got {self.seed!r}")

    @property
    def policy(self) -> str:
        return "drain" if self.kind == "drain" else "switch"

    @property
    def label(self) -> str:
        return "corrupt" if self.kind == "corrupt" else f"{self.kind} seed{self.seed}"


def reload_plan(switches: int, first_offset_s: float, interval_s: float, seeds: Sequence[int] = (1, 2),
                drain: bool = True, corrupt: bool = True) -> tuple[ReloadStep, ...]:
    """`switches` switches over `seeds` in turn, then a drain (the next seed), then a corrupt source."""
    if switches < 0:
        raise LabError(f"switches must be >= 0, got {switches}")
    if interval_s <= 0:
        raise LabError(f"the interval between reloads must be > 0 s, got {interval_s}")
    if not seeds:
        raise LabError("seeds must name at least one seed to reload")
    kinds = ["switch"] * switches + ["drain"] * bool(drain) + ["corrupt"] * bool(corrupt)
    if not kinds:
        raise LabError("the reload plan is empty: ask for switches, a drain or a corrupt source")
    return tuple(ReloadStep(kind, first_offset_s + i * interval_s,
                            None if kind == "corrupt" else int(seeds[i % len(seeds)]))
                 for i, kind in enumerate(kinds))


@dataclass(frozen=True)
class StudyConfig:
    model: str  # an engine preset, served with seeded dummy weights
    steps: tuple[ReloadStep, ...]  # in time order, each inside the load
    device: str = "auto"  # the replica's: auto, cpu, cuda, cuda:N
    # config.json overrides of the served model; the replica applies them to every reload's config too
    hf_overrides: Mapping[str, Any] = field(default_factory=dict)
    serve_flags: tuple[str, ...] = ()  # more `lab serve` flags
    request_rate_per_s: float = 2.0  # Poisson arrivals of the steady load
    load_duration_s: float = 30.0  # seconds of arrivals
    input_tokens: int = 32
    output_tokens: int = 16
    max_concurrency: int | None = None  # at most this many requests in flight; None: no cap
    corrupt_source: str = "nan-checkpoint"  # CORRUPT_KINDS
    window_s: float = 2.0  # tokens this close to a reload (its start to its switch) are "around" it
    request_timeout_s: float = 120.0  # the load's client gives up on a request after this
    reload_timeout_s: float = 900.0  # one POST /admin/reload (reading a large model takes minutes)
    drain_wait_s: float = 120.0  # how long a drain may take to be promoted before the next step goes anyway
    ready_timeout_s: float = 600.0  # replica start to /ready
    seed: int = 0  # the load's prompts and arrivals; the replica starts on the preset's seed 0

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise LabError(f"the hot-reload study serves a preset (reloads switch its dummy-weight seed); "
                           f"{self.model!r} is none of {', '.join(PRESETS)}")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "serve_flags", tuple(self.serve_flags))
        object.__setattr__(self, "hf_overrides", dict(self.hf_overrides))
        if not self.steps:
            raise LabError("StudyConfig.steps is empty: the study needs at least one reload")
        offsets = [s.offset_s for s in self.steps]
        if offsets != sorted(offsets):
            raise LabError(f"reload steps must be in time order, got offsets {offsets}")
        for name in ("request_rate_per_s", "load_duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LabError(f"{name} must be a finite number > 0, got {value!r}")
        if offsets[-1] >= self.load_duration_s:
            raise LabError(f"the last reload (at {offsets[-1]:g} s) must come before the load ends "
                           f"(load_duration_s={self.load_duration_s:g})")
        if self.input_tokens < 1 or self.output_tokens < 2:
            raise LabError("input_tokens must be >= 1 and output_tokens >= 2 (inter-token latency needs two tokens)")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise LabError(f"max_concurrency must be >= 1 or None, got {self.max_concurrency}")
        if self.corrupt_source not in CORRUPT_KINDS:
            raise LabError(f"corrupt_source must be one of {', '.join(CORRUPT_KINDS)}, got {self.corrupt_source!r}")
        if not (math.isfinite(self.window_s) and self.window_s >= 0):
            raise LabError(f"window_s must be a finite number >= 0, got {self.window_s!r}")
        if any(flag in ("--admin-key-hash", "--seed") for flag in self.serve_flags):
            raise LabError("serve_flags: the study sets --admin-key-hash itself and the replica starts on seed 0")

    @property
    def vocab_size(self) -> int:
        """The served model's embedding rows: the load's prompts use only ids below it."""
        return int(self.hf_overrides.get("vocab_size", PRESETS[self.model].vocab_size))

    @property
    def num_requests(self) -> int:
        return max(1, round(self.request_rate_per_s * self.load_duration_s))

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "hf_overrides": dict(self.hf_overrides),
                "serve_flags": list(self.serve_flags), "request_rate_per_s": self.request_rate_per_s,
                "load_duration_s": self.load_duration_s, "num_requests": self.num_requests,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "max_concurrency": self.max_concurrency, "corrupt_source": self.corrupt_source,
                "window_s": self.window_s, "seed": self.seed,
                "steps": [{"kind": s.kind, "offset_s": s.offset_s, "seed": s.seed} for s in self.steps]}


def study_configs(models: Sequence[str], corrupt_sources: Mapping[str, str], steps: Sequence[ReloadStep],
                  **fields: Any) -> list[StudyConfig]:
    """One `StudyConfig` per model (run one after the other), each with its own corrupt source kind."""
    if not models:
        raise LabError("models is empty: name at least one preset to serve")
    unnamed = [m for m in models if m not in corrupt_sources]
    if unnamed and any(s.kind == "corrupt" for s in steps):
        raise LabError(f"corrupt_sources names no kind for {unnamed}; give each model one of "
                       f"{', '.join(CORRUPT_KINDS)}")
    return [StudyConfig(model=m, steps=tuple(steps), **fields,
                        **({"corrupt_source": corrupt_sources[m]} if m in corrupt_sources else {})) for m in models]
