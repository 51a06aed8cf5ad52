"""Workloads: how long each request's prompt and output are, and the plan that combines them.

Contract:
- `RandomWorkload(num_requests, input_tokens, output_tokens, range_ratio=0.0)`: vLLM's `random`
  dataset. With range ratio 0 every request has the same prompt and output length; with r in
  [0, 1) each length is drawn uniformly from the integers in [len * (1 - r), len * (1 + r)]
  (at least 1), as vLLM's `--random-range-ratio`. Sent with `ignore_eos` the server generates
  exactly the drawn output length.
- `ChatWorkload(num_requests, max_context_tokens, trace)`: chat-like (ShareGPT-like) lengths,
  drawn from a bivariate lognormal fitted at run time to a trace's ContextTokens and
  GeneratedTokens (`lab.bench.length_models.LognormalLengths`; default: the shipped Azure 2023
  conversation trace), prompt + output clipped to `max_context_tokens`. Its arrivals are
  synthetic, as a random workload's.
- `TraceWorkload(path, speedup, max_duration_s, max_context_tokens, max_requests)`: lengths from
  a trace CSV (`lab.bench.traces`). Context tokens are clipped so that prompt + output fit in
  `max_context_tokens` (the output keeps its length, clipped to max_context_tokens - 1, and the
  prompt keeps at least 1 token); the trace's own timestamps are its `default_arrivals()`.
  A random workload's default arrivals send everything at once (vLLM's `--request-rate inf`).
- `plan_requests(workload, arrivals, tiers, prompts, prompt_format, seed)` -> `PlannedRequest`s:
  lengths, arrival offsets, tier and the built prompt of every request, fixed by `seed` before
  anything is sent (building prompts in the send loop would steal CPU from the measurement).
  `shapes(rng)` draws a workload's lengths from its own random stream, so the lengths do not
  change with the rate, the tiers or the prompt format.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.bench.arrivals import ArrivalProcess, PoissonArrivals, TraceArrivals
from lab.bench.length_models import LognormalLengths
from lab.bench.prompts import Prompt, PromptBuilder
from lab.bench.tiers import TierMix, TierShare
from lab.bench.traces import TraceRow, read_trace
from lab.errors import LabError
from lab.paths import default_trace_path


@dataclass(frozen=True)
class RequestShape:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class RandomWorkload:
    num_requests: int
    input_tokens: int
    output_tokens: int
    range_ratio: float = 0.0  # lengths uniform in [len * (1 - r), len * (1 + r)] (vLLM's --random-range-ratio)

    def __post_init__(self) -> None:
        if self.num_requests < 1 or self.input_tokens < 1 or self.output_tokens < 1:
            raise LabError("a random workload needs num_requests, input_tokens and output_tokens >= 1")
        if not 0.0 <= self.range_ratio < 1.0:
            raise LabError(f"range_ratio must be in [0, 1), got {self.range_ratio}")

    def shapes(self, rng: np.random.Generator | None = None) -> tuple[RequestShape, ...]:
        if self.range_ratio == 0.0:
            return (RequestShape(self.input_tokens, self.output_tokens),) * self.num_requests
        rng = rng if rng is not None else np.random.default_rng(0)
        inputs, outputs = (_uniform_lengths(length, self.range_ratio, self.num_requests, rng)
                           for length in (self.input_tokens, self.output_tokens))
        return tuple(RequestShape(int(i), int(o)) for i, o in zip(inputs, outputs))

    def default_arrivals(self) -> ArrivalProcess:
        # Random lengths carry no timing of their own: everything at once, vLLM's default rate inf.
        return PoissonArrivals(math.inf)

    def describe(self) -> dict[str, object]:
        return {"workload": "random", "num_requests": self.num_requests,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "range_ratio": self.range_ratio}


def _uniform_lengths(length: int, ratio: float, n: int, rng: np.random.Generator) -> np.ndarray:
    low, high = max(1, int(length * (1 - ratio))), max(1, int(length * (1 + ratio)))
    return rng.integers(low, high + 1, size=n)  # (n,) integers in [low, high]


@dataclass(frozen=True)
class ChatWorkload:
    num_requests: int
    max_context_tokens: int = 4096  # prompt + output of one request fit in this
    trace: Path | None = None  # the trace the lengths are fitted to; None: the Azure 2023 conversation trace

    def __post_init__(self) -> None:
        if self.num_requests < 1:
            raise LabError(f"a chat workload needs num_requests >= 1, got {self.num_requests}")
        if self.max_context_tokens < 2:
            raise LabError(f"max_context_tokens must be >= 2, got {self.max_context_tokens}")

    @property
    def trace_path(self) -> Path:
        return Path(self.trace) if self.trace is not None else default_trace_path()

    @functools.cached_property
    def lengths(self) -> LognormalLengths:
        return LognormalLengths.fit(read_trace(self.trace_path).rows)

    def shapes(self, rng: np.random.Generator | None = None) -> tuple[RequestShape, ...]:
        rng = rng if rng is not None else np.random.default_rng(0)
        pairs = self.lengths.sample(self.num_requests, rng, self.max_context_tokens)
        return tuple(RequestShape(i, o) for i, o in pairs)

    def default_arrivals(self) -> ArrivalProcess:
        return PoissonArrivals(math.inf)

    def describe(self) -> dict[str, object]:
        return {"workload": "chat", "num_requests": self.num_requests, "max_context_tokens": self.max_context_tokens,
                "trace": str(self.trace_path), "lengths": "lognormal", **self.lengths.describe()}


@dataclass(frozen=True)
class TraceWorkload:
    path: Path | None = None  # None: the Azure 2023 conversation trace (`default_trace_path()`)
    speedup: float = 1.0  # 2.0 replays the trace twice as fast
    max_duration_s: float | None = None  # replay time; later requests are dropped
    max_context_tokens: int = 4096  # prompt + output of one request fit in this
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if self.max_context_tokens < 2:
            raise LabError(f"max_context_tokens must be >= 2, got {self.max_context_tokens}")

    @property
    def trace_path(self) -> Path:
        return Path(self.path) if self.path is not None else default_trace_path()

    @functools.cached_property
    def _rows(self) -> tuple[TraceRow, ...]:
        # Parsed once per workload object (a full trace is ~20k rows); cached_property writes the
        # instance __dict__ directly, which a frozen dataclass allows.
        rows = read_trace(self.trace_path).replay(self.speedup, self.max_duration_s).rows
        return rows[: self.max_requests] if self.max_requests is not None else rows

    def shapes(self, rng: np.random.Generator | None = None) -> tuple[RequestShape, ...]:
        shapes = []
        for row in self._rows:
            output_tokens = min(max(row.generated_tokens, 1), self.max_context_tokens - 1)
            input_tokens = min(max(row.context_tokens, 1), self.max_context_tokens - output_tokens)
            shapes.append(RequestShape(input_tokens, output_tokens))
        return tuple(shapes)

    def default_arrivals(self) -> ArrivalProcess:
        return TraceArrivals(tuple(row.arrival_s for row in self._rows))

    def describe(self) -> dict[str, object]:
        return {"workload": "trace", "trace": str(self.trace_path), "speedup": self.speedup,
                "max_duration_s": self.max_duration_s, "max_context_tokens": self.max_context_tokens,
                "max_requests": self.max_requests}


Workload = RandomWorkload | ChatWorkload | TraceWorkload


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    arrival_s: float  # offset from the start of the run
    input_tokens: int
    output_tokens: int  # sent as max_tokens
    tier: TierShare
    prompt: Prompt


def plan_requests(workload: Workload, arrivals: ArrivalProcess | None, tiers: TierMix,
                  prompts: PromptBuilder, prompt_format: str, seed: int) -> tuple[PlannedRequest, ...]:
    """Every request of a run, in arrival order (see module docstring)."""
    # Independent streams per concern, so e.g. changing the rate keeps the same prompts and tiers.
    arrival_rng, tier_rng, prompt_rng, length_rng = (np.random.default_rng([seed, stream]) for stream in (1, 2, 3, 4))
    shapes = workload.shapes(length_rng)
    if not shapes:
        raise LabError("the workload has no requests (trace empty within its max duration?)")
    process = arrivals or workload.default_arrivals()
    times_s = process.arrival_times_s(len(shapes), arrival_rng)
    assigned = tiers.assign(len(shapes), tier_rng)
    return tuple(
        PlannedRequest(i, float(times_s[i]), shape.input_tokens, shape.output_tokens, assigned[i],
                       prompts.build(shape.input_tokens, prompt_rng, prompt_format))
        for i, shape in enumerate(shapes)
    )
