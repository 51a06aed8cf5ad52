"""KV-cache write: copy each new token's row to its cache slot, skipping padding slots (< 0).

Contract: `write_kv_triton(cache (N, block_size, *shape), slot_mapping (T,), values (T, *shape))`
does what `attention.write_to_cache` does, except that rows whose slot is negative are skipped:
a CUDA-graph batch padded to its bucket marks its padding rows with slot -1 so they write nothing.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_write_kernel(values_ptr, slot_ptr, cache_ptr, stride_v, ROW: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < ROW
        x = tl.load(values_ptr + t * stride_v + offs, mask=mask)
        tl.store(cache_ptr + slot * ROW + offs, x.to(cache_ptr.dtype.element_ty), mask=mask)


def write_kv_triton(cache: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    num_tokens = values.shape[0]
    row = math.prod(cache.shape[2:])
    flat = values.reshape(num_tokens, row)  # a view when each token's row is contiguous (split of qkv)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    if num_tokens == 0:
        return
    _kv_write_kernel[(num_tokens,)](flat, slot_mapping, cache, flat.stride(0), ROW=row, BLOCK=triton.next_power_of_2(row))
