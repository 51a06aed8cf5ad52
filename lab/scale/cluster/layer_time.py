"""Where a decoder layer's compute time comes from: the `LayerTimeSource` protocol and its two sources.

Contract: a source answers `component_times_s(work)` with seconds per component ("attention",
"dense_mlp", "router", "routed_experts", "shared_experts", "head", "other") for one GPU doing `work`
(`LayerWork`: what that GPU computes in one layer of one step, shard and token counts included).
- `RooflineLayerTime`: each component takes max(bytes / (HBM bandwidth x bandwidth_efficiency),
  FLOPs / (tensor peak x compute_efficiency)); `gemm_format` "bf16" models FP8-stored weights run as bf16 GEMMs.
  Both efficiencies are required inputs: a roofline at
  efficiency 1 is the physical bound; any lower number must come from a measurement.
- `MeasuredLayerTime`: interpolates a measured table (the GPU layer profile of issue 19), per component,
  over tokens (and context for attention). It answers only for the shard it was measured at and only
  inside the measured range: anything else raises instead of extrapolating silently.
Activation traffic and elementwise work are left out of the roofline (small next to the weights and KV
at decode); a measured source includes them.
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

    def _time(self, nbytes: float, gemm_flops: float, bf16_flops: float = 0.0) -> float:
        memory_s = nbytes / (self.gpu.hbm_bytes_per_s * self.bandwidth_efficiency)
        compute_s = (gemm_flops / self.gpu.peak_flops(self.gemm_format or self.weight_format)
                     + bf16_flops / self.gpu.bf16_flops)
        return max(memory_s, compute_s / self.compute_efficiency)

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
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
    component does not depend on context). For "routed_experts" the token axis is `expert_rows`."""

    tokens: Sequence[float]
    context: Sequence[float]
    seconds: Sequence[Sequence[float]]

    def __post_init__(self) -> None:
        grid = np.asarray(self.seconds, dtype=float)
        if list(self.tokens) != sorted(set(self.tokens)) or list(self.context) != sorted(set(self.context)):
            raise ValueError("measured tokens and context must be strictly increasing")
        if grid.shape != (len(self.tokens), len(self.context)) or not (grid > 0).all():
            raise ValueError(f"measured seconds must be a {len(self.tokens)}x{len(self.context)} grid of positive "
                             "times")

    def at(self, tokens: float, context: float, name: str) -> float:
        for axis, value, points in (("tokens", tokens, self.tokens), ("context", context, self.context)):
            if len(points) > 1 and not points[0] <= value <= points[-1]:
                raise ValueError(f"{name}: {axis}={value:g} is outside the measured {points[0]:g}..{points[-1]:g}")
        grid = np.asarray(self.seconds, dtype=float)
        per_context = [float(np.interp(tokens, self.tokens, grid[:, j])) for j in range(len(self.context))]
        return float(np.interp(context, self.context, per_context)) if len(self.context) > 1 else per_context[0]


@dataclass(frozen=True)
class MeasuredLayerTime:
    """A GPU layer profile: per (layer kind, phase), per component, a measured grid, at one shard."""

    tables: Mapping[tuple[str, str], Mapping[str, MeasuredComponent]]
    shard: tuple[int, int, int]  # (tp, experts_held, expert_tp) the profile ran at
    source: str  # the record the numbers came from

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
        if work.shard != self.shard:
            raise ValueError(f"the layer profile ({self.source}) was measured at (tp, experts per GPU, expert tp)="
                             f"{self.shard}, the layout needs {work.shard}: measure that shard")
        table = self.tables.get((work.kind, work.phase))
        if table is None:
            raise ValueError(f"the layer profile ({self.source}) has no {work.kind} {work.phase} measurements")
        return {name: c.at(work.expert_rows if name == "routed_experts" else work.tokens, work.context_tokens, name)
                for name, c in table.items()}
