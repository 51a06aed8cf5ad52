"""Where a decoder layer's compute time comes from: the `LayerTimeSource` protocol and its two sources.

Contract: a source answers `component_times_s(work)` with seconds per component ("attention",
"dense_mlp", "router", "routed_experts", "shared_experts", "head", "other") for one GPU doing `work`
(`LayerWork`: what that GPU computes in one layer of one step, shard and token counts included).
- `RooflineLayerTime`: each component takes max(bytes / (HBM bandwidth x bandwidth_efficiency),
  FLOPs / (tensor peak x compute_efficiency)); `gemm_format` "bf16" models FP8-stored weights run as bf16 GEMMs.
  Both efficiencies are required inputs: a roofline at
  efficiency 1 is the physical bound; any lower number must come from a measurement.
  `component_terms(work)` gives each component's (memory, compute) seconds, so a caller can tell the regime.
- `MeasuredLayerTime`: interpolates a measured table (the GPU layer profile of issue 19), per component,
  over tokens (and context for attention). Prefill attention is measured per prompt (`per_prompt`): a step
  of `tokens` prompt tokens at mean causal context c is tokens / 2c prompts of 2c tokens each, so a batch
  of short prompts is not timed as one long prompt. A component that reads no KV cache (`PHASE_FREE`) is
  answered from its own phase's grid first and, outside that grid's range only, from its grid joined with the
  other phase's points of the same component (interpolated across any gap between the two grids, never beyond
  both), with a caveat saying so (`caveats(work)`). It answers only for the shard it was measured at and only
  inside the measured range: anything else raises instead of extrapolating.
Every source also answers `caveats(work)`: what a number rests on besides its own measurement (none for
the roofline). Activation traffic and elementwise work are left out of the roofline (small next to the
weights and KV at decode); a measured source includes them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lab.scale.cluster.hardware import GPU
from lab.scale.cluster.memory import attention_bytes_per_gpu
from lab.scale.cluster.model import ModelShape, instance_bytes, params

LAYER_KINDS = ("dense", "moe", "head")
PHASES = ("decode", "prefill")
# Components that read no KV cache: the same module on (tokens, hidden) in either phase, so a phase's grid
# may borrow the other phase's points outside its own range. Borrowing is labelled, never silent, because
# the two phases may not time the same kernels at one token count (e.g. decode as CUDA graph replays,
# prefill eagerly; which kernels each phase ran is the layer study's to state, see `layer_profile`).
PHASE_FREE = ("dense_mlp", "router", "routed_experts", "shared_experts", "other", "head")


@dataclass(frozen=True)
class LayerWork:
    kind: str  # "dense" or "moe" decoder layer, or "head" (the LM head once per step)
    phase: str  # "decode" (one new token per sequence) or "prefill" (prompt tokens)
    tokens: int  # tokens this GPU's DP group runs through attention (and the head)
    context_tokens: float  # mean tokens each of them attends to
    tp: int
    experts_held: int  # expert slots on this GPU
    expert_tp: int  # GPUs each expert is split over
    expert_rows: float  # token-expert pairs this GPU's experts process (skew included)
    active_experts: float  # expected experts of this GPU that receive at least one token

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS or self.phase not in PHASES:
            raise ValueError(f"kind must be one of {LAYER_KINDS} and phase one of {PHASES}: got {self.kind}, "
                             f"{self.phase}")

    @property
    def shard(self) -> tuple[int, int, int]:
        return self.tp, self.experts_held, self.expert_tp


class LayerTimeSource(Protocol):
    def component_times_s(self, work: LayerWork) -> dict[str, float]: ...

    def caveats(self, work: LayerWork) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class RooflineLayerTime:
    model: ModelShape
    gpu: GPU
    weight_format: str
    kv_dtype_bytes: int
    bandwidth_efficiency: float  # achieved / peak HBM bandwidth: measured, or 1 for the bound
    compute_efficiency: float  # achieved / peak tensor FLOP/s: measured, or 1 for the bound
    # the GEMMs' format when it differs from storage: "bf16" for FP8 weights dequantized into bf16 GEMMs
    # (W8A16, a card without FP8 tensor cores); None: the GEMMs run in the weight format
    gemm_format: str | None = None

    def __post_init__(self) -> None:
        for name in ("bandwidth_efficiency", "compute_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        self.gpu.peak_flops(self.gemm_format or self.weight_format)  # refuses FP8 GEMMs on a card without them

    def _time(self, nbytes: float, gemm_flops: float, bf16_flops: float = 0.0) -> tuple[float, float]:
        """(memory seconds, compute seconds) at the stated efficiencies; the component takes the larger."""
        memory_s = nbytes / (self.gpu.hbm_bytes_per_s * self.bandwidth_efficiency)
        compute_s = (gemm_flops / self.gpu.peak_flops(self.gemm_format or self.weight_format)
                     + bf16_flops / self.gpu.bf16_flops)
        return memory_s, compute_s / self.compute_efficiency

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
        return {name: max(terms) for name, terms in self.component_terms(work).items()}

    def caveats(self, work: LayerWork) -> tuple[str, ...]:
        return ()

    def component_terms(self, work: LayerWork) -> dict[str, tuple[float, float]]:
        m, fmt, t = self.model, self.weight_format, work.tokens
        if work.kind == "head":
            head_bytes = instance_bytes(m, "head", "bf16") / work.tp
            return {"head": self._time(head_bytes, 2 * t * params(m, "head") / work.tp)}
        heads = m.num_heads // work.tp
        q_a, _, kv_a, _, _ = m.matrices("attention")
        replicated = q_a[0] * q_a[1] + kv_a[0] * kv_a[1]
        proj_params = replicated + (params(m, "attention") - replicated) / work.tp
        if work.phase == "decode":  # absorbed MLA: scores over the 576-wide latent, values from the 512 latent
            core_flops = 2 * t * heads * work.context_tokens * (m.kv_latent_dim + m.kv_lora_rank)
        else:  # prefill expands the latent into per-head keys and values, then plain attention
            core_flops = 2 * t * heads * work.context_tokens * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim)
        kv_read = t * work.context_tokens * m.kv_latent_dim * self.kv_dtype_bytes if work.phase == "decode" else 0
        times = {"attention": self._time(attention_bytes_per_gpu(m, fmt, work.tp) + kv_read, 2 * t * proj_params,
                                         core_flops),
                 "other": self._time(instance_bytes(m, "norms", fmt), 0.0)}
        if work.kind == "dense":
            p = params(m, "dense_mlp") / work.tp
            times["dense_mlp"] = self._time(instance_bytes(m, "dense_mlp", fmt) / work.tp, 2 * t * p)
            return times
        expert_params = params(m, "routed_experts") / work.expert_tp
        times["router"] = self._time(instance_bytes(m, "router", fmt), 2 * t * params(m, "router"))
        times["routed_experts"] = self._time(
            work.active_experts * instance_bytes(m, "routed_experts", fmt) / work.expert_tp,
            2 * work.expert_rows * expert_params)
        shared = m.shared_experts / work.tp
        times["shared_experts"] = self._time(shared * instance_bytes(m, "shared_experts", fmt),
                                             2 * t * shared * params(m, "shared_experts"))
        return times


@dataclass(frozen=True)
class MeasuredComponent:
    """Seconds of one component on a grid: `seconds[i][j]` at `tokens[i]` and `context[j]` (one column if the
    component does not depend on context). For "routed_experts" the token axis is `expert_rows`. With
    `per_prompt` (prefill attention) the token axis is one prompt's length and the grid one column: a step of
    `tokens` prompt tokens at mean causal context c is answered as tokens / 2c prompts of 2c tokens each."""

    tokens: Sequence[float]
    context: Sequence[float]
    seconds: Sequence[Sequence[float]]
    per_prompt: bool = False

    def __post_init__(self) -> None:
        grid = np.asarray(self.seconds, dtype=float)
        if list(self.tokens) != sorted(set(self.tokens)) or list(self.context) != sorted(set(self.context)):
            raise ValueError("measured tokens and context must be strictly increasing")
        if grid.shape != (len(self.tokens), len(self.context)) or not (grid > 0).all():
            raise ValueError(f"measured seconds must be a {len(self.tokens)}x{len(self.context)} grid of positive "
                             "times")
        if self.per_prompt and len(self.context) != 1:
            raise ValueError("a per-prompt grid has one column: a prompt's context is the prompt itself")

    @property
    def token_range(self) -> tuple[float, float]:
        return self.tokens[0], self.tokens[-1]

    def covers(self, tokens: float) -> bool:
        return self.tokens[0] <= tokens <= self.tokens[-1]

    def at(self, tokens: float, context: float, name: str) -> float:
        if self.per_prompt:
            if context <= 0:
                raise ValueError(f"{name}: a prefill needs a mean causal context > 0, got {context:g}")
            prompt = 2 * context  # mean causal context of a prompt of n tokens is n / 2
            return tokens / prompt * self._interpolate(prompt, None, name, "prompt tokens")
        return self._interpolate(tokens, context, name, "tokens")

    def _interpolate(self, tokens: float, context: float | None, name: str, axis: str) -> float:
        if not self.covers(tokens):
            raise ValueError(f"{name}: {axis}={tokens:g} is outside the measured {self.tokens[0]:g}.."
                             f"{self.tokens[-1]:g}")
        if context is not None and len(self.context) > 1 and not self.context[0] <= context <= self.context[-1]:
            raise ValueError(f"{name}: context={context:g} is outside the measured {self.context[0]:g}.."
                             f"{self.context[-1]:g}")
        grid = np.asarray(self.seconds, dtype=float)
        per_context = [float(np.interp(tokens, self.tokens, grid[:, j])) for j in range(len(self.context))]
        return float(np.interp(context, self.context, per_context)) if len(self.context) > 1 else per_context[0]

    def extended(self, other: MeasuredComponent) -> MeasuredComponent:
        """This grid plus `other`'s points outside this grid's token range (both one column, no prompt axis)."""
        if len(self.context) != 1 or len(other.context) != 1 or self.per_prompt or other.per_prompt:
            raise ValueError("only one-column grids over tokens can be joined")
        lo, hi = self.token_range
        points = {t: row[0] for t, row in zip(self.tokens, self.seconds)}
        points.update({t: row[0] for t, row in zip(other.tokens, other.seconds) if not lo <= t <= hi})
        tokens = sorted(points)
        return MeasuredComponent(tokens, self.context, [[points[t]] for t in tokens])


@dataclass(frozen=True)
class MeasuredLayerTime:
    """A GPU layer profile: per (layer kind, phase), per component, a measured grid, at one shard."""

    tables: Mapping[tuple[str, str], Mapping[str, MeasuredComponent]]
    shard: tuple[int, int, int]  # (tp, experts_held, expert_tp) the profile ran at
    source: str  # the record the numbers came from

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
        return {name: seconds for name, (seconds, _) in self._answers(work).items()}

    def caveats(self, work: LayerWork) -> tuple[str, ...]:
        return tuple(note for _, note in self._answers(work).values() if note)

    def reach(self, kind: str, phase: str, name: str) -> tuple[float, float]:
        """The token (rows) range `name` of (kind, phase) answers: its grid's, joined with the other phase's
        grid of the same component where the component reads no KV cache."""
        own = self.tables.get((kind, phase), {}).get(name)
        if own is None:
            raise ValueError(f"the layer profile ({self.source}) has no {kind} {phase} {name} measurements")
        grids = [own]
        if name in PHASE_FREE:
            other = self.tables.get((kind, next(p for p in PHASES if p != phase)), {}).get(name)
            grids += [other] if other is not None else []
        return min(g.tokens[0] for g in grids), max(g.tokens[-1] for g in grids)

    def _answers(self, work: LayerWork) -> dict[str, tuple[float, str]]:
        if work.shard != self.shard:
            raise ValueError(f"the layer profile ({self.source}) was measured at (tp, experts per GPU, expert tp)="
                             f"{self.shard}, the layout needs {work.shard}: measure that shard")
        table = self.tables.get((work.kind, work.phase))
        if table is None:
            raise ValueError(f"the layer profile ({self.source}) has no {work.kind} {work.phase} measurements")
        return {name: self._answer(work, name, c) for name, c in table.items()}

    def _answer(self, work: LayerWork, name: str, own: MeasuredComponent) -> tuple[float, str]:
        value = work.expert_rows if name == "routed_experts" else work.tokens
        if own.per_prompt or own.covers(value) or name not in PHASE_FREE:
            return own.at(value, work.context_tokens, name), ""
        other_phase = next(p for p in PHASES if p != work.phase)
        other = self.tables.get((work.kind, other_phase), {}).get(name)
        axis = "rows" if name == "routed_experts" else "tokens"
        lo, hi = own.token_range
        joined = own.extended(other) if other is not None else own
        if not joined.covers(value):  # beyond both grids: never extrapolated
            found = f", the {other_phase} grid {other.token_range[0]:g}..{other.token_range[1]:g}" if other else ""
            raise ValueError(f"{name}: {axis}={value:g} is outside the measured {work.phase} grid {lo:g}..{hi:g}"
                             f"{found}")
        note = (f"{work.kind} {work.phase} {name} at {value:g} {axis}: outside the {work.phase} grid {lo:g}..{hi:g}, "
                f"taken from the {other_phase} grid's points (joined with its own)")
        return joined.at(value, work.context_tokens, name), note
