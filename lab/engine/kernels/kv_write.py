"""KV-cache write: copy each new token's row to its cache slot, skipping padding slots (< 0).

Contract: `write_kv_triton(cache (N, block_size, *shape), slot_mapping (T,), values (T, *shape))`
does what `attention.write_to_cache` does, except that rows whose slot is negative are skipped:
a CUDA-graph batch padded to its bucket marks its padding rows with slot -1 so they write nothing.
An 8-bit cache (`kv_quant.QuantizedCache`, at most two scale parts per row) is quantized as it is
written, as `kv_quant.write_rows` does: program (token, lead index) scales each part of its row.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from lab.engine.kernels.kv_quant import code_params, store_quantized
from lab.engine.kv_quant import QuantizedCache


@triton.jit
def _kv_write_kernel(values_ptr, slot_ptr, cache_ptr, stride_v, ROW: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < ROW
        x = tl.load(values_ptr + t * stride_v + offs, mask=mask)
        tl.store(cache_ptr + slot * ROW + offs, x.to(cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kv_write_8bit_kernel(
    values_ptr, slot_ptr, data_ptr, scale_ptr, stride_vt, stride_vl,
    LEAD: tl.constexpr, W0: tl.constexpr, BLOCK0: tl.constexpr, W1: tl.constexpr, BLOCK1: tl.constexpr,
    QMAX: tl.constexpr, INT8: tl.constexpr,
):
    t = tl.program_id(0)
    lead = tl.program_id(1)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        src = values_ptr + t * stride_vt + lead * stride_vl
        row = slot * LEAD + lead  # (slot, lead) row of the flat (slots * LEAD, W) codes
        parts = 1 if W1 == 0 else 2
        offs0 = tl.arange(0, BLOCK0)
        mask0 = offs0 < W0
        x0 = tl.load(src + offs0, mask=mask0, other=0.0).to(tl.float32)
        store_quantized(x0, data_ptr + row * (W0 + W1), offs0, mask0, scale_ptr + row * parts, QMAX, INT8)
        if W1 > 0:
            offs1 = tl.arange(0, BLOCK1)
            mask1 = offs1 < W1
            x1 = tl.load(src + W0 + offs1, mask=mask1, other=0.0).to(tl.float32)
            store_quantized(x1, data_ptr + row * (W0 + W1) + W0, offs1, mask1, scale_ptr + row * parts + 1, QMAX, INT8)


def write_kv_triton(cache: torch.Tensor | QuantizedCache, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    if isinstance(cache, QuantizedCache):
        _write_8bit(cache, slot_mapping, values)
        return
    num_tokens = values.shape[0]
    row = math.prod(cache.shape[2:])
    flat = values.reshape(num_tokens, row)  # a view when each token's row is contiguous (split of qkv)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    if num_tokens == 0:
        return
    _kv_write_kernel[(num_tokens,)](flat, slot_mapping, cache, flat.stride(0), ROW=row, BLOCK=triton.next_power_of_2(row))


def _write_8bit(cache: QuantizedCache, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    if len(cache.groups) > 2:
        raise ValueError(f"the Triton 8-bit KV write takes at most two scale parts per row, got {cache.groups}")
    num_tokens, width = values.shape[0], cache.shape[-1]
    lead = math.prod(cache.shape[2:-1])
    rows = values.reshape(num_tokens, lead, width)  # a view when each row is contiguous (split of qkv)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    if num_tokens == 0:
        return
    w0 = cache.groups[0]
    w1 = cache.groups[1] if len(cache.groups) == 2 else 0
    _kv_write_8bit_kernel[(num_tokens, lead)](
        rows, slot_mapping, cache.data, cache.scale, rows.stride(0), rows.stride(1),
        LEAD=lead, W0=w0, BLOCK0=triton.next_power_of_2(w0), W1=w1, BLOCK1=triton.next_power_of_2(max(w1, 1)),
        **code_params(cache.data.dtype),
    )
