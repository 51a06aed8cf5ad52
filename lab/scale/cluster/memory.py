"""Memory per GPU of a layout: the weights it holds, the KV cache of its sequences, a reserve; does it fit.

Contract: `stage_memory(model, layout, gpu, batch, context_tokens, weight_format, kv_dtype_bytes,
reserve_bytes)` returns one `MemoryPerGPU` per pipeline stage for a GPU of that stage (all GPUs of a
stage hold the same bytes under the even split of `layout`); `memory_per_gpu` returns the fullest stage.
`batch` counts the instance's running sequences (spread evenly over its `dp` groups, rounded up), each of
`context_tokens` tokens. The reserve (activations, CUDA graphs, allocator slack, the runtime) is an input
because it depends on the engine and must be measured, never guessed here. `max_batch` is the largest
batch whose fullest stage still fits. Sharding follows the usual MLA/MoE tensor-parallel split: q_a, kv_a,
norms and the router are replicated on every GPU; q_b, kv_b, o, dense and shared MLPs, embedding and head
split over `tp`; each GPU holds `experts_per_gpu` experts split over `expert_tp`.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.scale.cluster.hardware import GPU
from lab.scale.cluster.layout import Layout
from lab.scale.cluster.model import ModelShape, instance_bytes, matrix_bytes


@dataclass(frozen=True)
class MemoryPerGPU:
    weight_bytes: float
    kv_bytes: float
    reserve_bytes: float
    capacity_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.reserve_bytes

    @property
    def free_bytes(self) -> float:
        return self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.free_bytes >= 0


def attention_bytes_per_gpu(model: ModelShape, weight_format: str, tp: int) -> float:
    """One layer's attention weights on one GPU: q_a and kv_a replicated, q_b, kv_b and o split over tp."""
    q_a, q_b, kv_a, kv_b, o = model.matrices("attention")
    fmt = weight_format  # attention linears are FP8 in the block-FP8 checkpoint
    replicated = matrix_bytes(*q_a, fmt) + matrix_bytes(*kv_a, fmt)
    return replicated + sum(matrix_bytes(*m, fmt) for m in (q_b, kv_b, o)) / tp


def layer_weight_bytes_per_gpu(model: ModelShape, layout: Layout, weight_format: str, moe: bool) -> float:
    """One decoder layer's weights on one GPU of a stage."""
    nbytes = attention_bytes_per_gpu(model, weight_format, layout.tp) + instance_bytes(model, "norms", weight_format)
    if not moe:
        return nbytes + instance_bytes(model, "dense_mlp", weight_format) / layout.tp
    experts = layout.experts_per_gpu(model) * instance_bytes(model, "routed_experts", weight_format) / layout.expert_tp
    shared = model.shared_experts * instance_bytes(model, "shared_experts", weight_format) / layout.tp
    return nbytes + experts + shared + instance_bytes(model, "router", weight_format)


def stage_memory(model: ModelShape, layout: Layout, gpu: GPU, batch: int, context_tokens: int, weight_format: str,
                 kv_dtype_bytes: int, reserve_bytes: float) -> list[MemoryPerGPU]:
    layout.validate(model)
    if batch < 0 or context_tokens < 0 or reserve_bytes < 0:
        raise ValueError(f"batch, context_tokens and reserve_bytes must be >= 0, got {batch}, {context_tokens}, "
                         f"{reserve_bytes}")
    seqs_per_group = -(-batch // layout.dp)  # ceil: the busiest DP group sets the memory
    dense_layer = layer_weight_bytes_per_gpu(model, layout, weight_format, moe=False)
    moe_layer = layer_weight_bytes_per_gpu(model, layout, weight_format, moe=True)
    stages = layout.stage_layers(model)
    out = []
    for s, (dense, moe) in enumerate(stages):
        weights = dense * dense_layer + moe * moe_layer
        if s == 0:
            weights += instance_bytes(model, "embedding", weight_format) / layout.tp
        if s == len(stages) - 1:
            weights += instance_bytes(model, "head", weight_format) / layout.tp
        kv = seqs_per_group * context_tokens * model.kv_bytes_per_token(kv_dtype_bytes, layers=dense + moe)
        out.append(MemoryPerGPU(weights, kv, reserve_bytes, gpu.memory_bytes))
    return out


def memory_per_gpu(model: ModelShape, layout: Layout, gpu: GPU, batch: int, context_tokens: int, weight_format: str,
                   kv_dtype_bytes: int, reserve_bytes: float) -> MemoryPerGPU:
    """The fullest stage's GPU (the one that decides whether the layout fits)."""
    stages = stage_memory(model, layout, gpu, batch, context_tokens, weight_format, kv_dtype_bytes, reserve_bytes)
    return max(stages, key=lambda m: m.total_bytes)


def max_batch(model: ModelShape, layout: Layout, gpu: GPU, context_tokens: int, weight_format: str,
              kv_dtype_bytes: int, reserve_bytes: float) -> int:
    """The most sequences of `context_tokens` the instance can hold (0: not even the weights fit)."""
    if context_tokens < 1:
        raise ValueError(f"context_tokens must be >= 1, got {context_tokens}")
    args = (weight_format, kv_dtype_bytes, reserve_bytes)
    if not memory_per_gpu(model, layout, gpu, 0, context_tokens, *args).fits:
        return 0
    low, high = 0, 1
    while memory_per_gpu(model, layout, gpu, high, context_tokens, *args).fits:
        low, high = high, high * 2
    while high - low > 1:  # memory grows with batch, so bisect on fits
        mid = (low + high) // 2
        low, high = (mid, high) if memory_per_gpu(model, layout, gpu, mid, context_tokens, *args).fits else (low, mid)
    return low
