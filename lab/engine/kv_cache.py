"""KV cache layout and allocation.

A model declares what it stores per token and layer (`KVCacheSpec`): K and V of its KV heads
for GQA, a single latent row (kv_lora_rank + rope dims) for MLA. The engine sizes the number
of blocks from free device memory or takes a given number, and allocates one tuple of cache
tensors per layer, each (num_blocks, block_size, *shape).

Contract: `spec.with_cache_dtype(name)` is the same layout stored as `EngineArgs.kv_cache_dtype` says:
"auto" keeps the model's dtype; "fp8" / "int8" store 8-bit codes plus float32 scales (`lab.engine.kv_quant`,
which explains the scales), and `bytes_per_token` counts both, so the sizing in `kv_sizing.py` gives about
twice the blocks of a bf16 cache for the same bytes. An 8-bit spec allocates a `kv_quant.QuantizedCache`
per cached tensor in place of the plain tensor; the per-layer tuples keep their length.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from lab.engine.kv_quant import SCALE_DTYPE, QuantizedCache, kv_storage_dtype


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    per_token_shapes: tuple[tuple[int, ...], ...]  # one shape per cached tensor of a layer
    dtype: torch.dtype  # the model's dtype: what an "auto" cache stores and an 8-bit one dequantizes to
    # Per cached tensor, the widths its last dim splits into, each part with its own scale per token in an
    # 8-bit cache (MLA: c_kv | k_pe); None: one part per row (GQA: per token and KV head).
    scale_groups: tuple[tuple[int, ...], ...] | None = None
    cache_dtype: torch.dtype | None = None  # an 8-bit storage dtype (float8_e4m3fn, int8); None: `dtype`

    @property
    def quantized(self) -> bool:
        return self.cache_dtype is not None

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.cache_dtype if self.cache_dtype is not None else self.dtype

    def groups(self, i: int) -> tuple[int, ...]:
        """The scale parts of cached tensor i's last dim."""
        return self.scale_groups[i] if self.scale_groups is not None else (self.per_token_shapes[i][-1],)

    def with_cache_dtype(self, kv_cache_dtype: str) -> KVCacheSpec:
        """This layout stored as `kv_cache_dtype` ("auto", "fp8", "fp8_e4m3", "int8"); ValueError otherwise."""
        return dataclasses.replace(self, cache_dtype=kv_storage_dtype(kv_cache_dtype))

    @property
    def bytes_per_token(self) -> int:
        elems = sum(math.prod(s) for s in self.per_token_shapes)
        total = elems * torch.empty((), dtype=self.storage_dtype).element_size()
        if self.quantized:  # one float32 scale per part of each row
            scales = sum(math.prod(s[:-1]) * len(self.groups(i)) for i, s in enumerate(self.per_token_shapes))
            total += scales * torch.empty((), dtype=SCALE_DTYPE).element_size()
        return total * self.num_layers

    def bytes_per_block(self, block_size: int) -> int:
        return self.bytes_per_token * block_size


def allocate_kv_cache(
    spec: KVCacheSpec, num_blocks: int, block_size: int, device: torch.device
) -> list[tuple[torch.Tensor, ...]]:
    """Zeroed cache tensors: for each layer, one (num_blocks, block_size, *shape) per stored tensor
    (a `QuantizedCache` of codes and scales for an 8-bit spec)."""
    if spec.quantized:
        return [tuple(_quantized(spec, i, num_blocks, block_size, device) for i in range(len(spec.per_token_shapes)))
                for _ in range(spec.num_layers)]
    return [
        tuple(torch.zeros(num_blocks, block_size, *shape, dtype=spec.dtype, device=device) for shape in spec.per_token_shapes)
        for _ in range(spec.num_layers)
    ]


def _quantized(spec: KVCacheSpec, i: int, num_blocks: int, block_size: int, device: torch.device) -> QuantizedCache:
    shape, groups = spec.per_token_shapes[i], spec.groups(i)
    data = torch.zeros(num_blocks, block_size, *shape, dtype=spec.cache_dtype, device=device)
    scale = torch.zeros(num_blocks, block_size, *shape[:-1], len(groups), dtype=SCALE_DTYPE, device=device)
    return QuantizedCache(data, scale, groups, spec.dtype)
