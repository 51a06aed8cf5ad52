"""KV cache layout and allocation.

A model declares what it stores per token and layer (`KVCacheSpec`): K and V of its KV heads
for GQA, a single latent row (kv_lora_rank + rope dims) for MLA. The engine sizes the number
of blocks from free device memory or takes a given number, and allocates one tuple of cache
tensors per layer, each (num_blocks, block_size, *shape).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    per_token_shapes: tuple[tuple[int, ...], ...]  # one shape per cached tensor of a layer
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        elems = sum(math.prod(s) for s in self.per_token_shapes)
        return elems * self.num_layers * torch.empty((), dtype=self.dtype).element_size()

    def bytes_per_block(self, block_size: int) -> int:
        return self.bytes_per_token * block_size


def allocate_kv_cache(
    spec: KVCacheSpec, num_blocks: int, block_size: int, device: torch.device
) -> list[tuple[torch.Tensor, ...]]:
    """Zeroed cache tensors: for each layer, one (num_blocks, block_size, *shape) per stored tensor."""
    return [
        tuple(torch.zeros(num_blocks, block_size, *shape, dtype=spec.dtype, device=device) for shape in spec.per_token_shapes)
        for _ in range(spec.num_layers)
    ]
