"""Triton pieces of the 8-bit KV cache (`lab.engine.kv_quant`): quantize a row part as it is written.

Contract (each `@triton.jit`, inlined into its caller):
  part_scale(amax, QMAX) -> scale            max|x| / QMAX, with the same floor as `kv_quant.quantize_rows`
  encode(x, scale, QMAX, INT8) -> codes      x / scale clamped to +-QMAX (INT8: rounded half away from zero),
                                             float32; the caller's store casts them to the cache's dtype
  store_quantized(x, dst, offs, mask, scale_dst, QMAX, INT8)  one part: its codes at dst + offs, its scale at scale_dst
The same float32 math as `kv_quant.quantize_rows`, so a Triton-written row equals a torch-written one (up to
the last bit of the division on a GPU, and e4m3 subnormals, which Triton's CPU interpreter flushes to 0).
The readers do not dequantize rows here: they fold the scales into the scores and the softmax weights
(`paged_decode.py`, `mla_decode.py`, `varlen_attention.py`), where one multiply per key covers a whole head.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def part_scale(amax, QMAX: tl.constexpr):
    return tl.maximum(amax, 1e-30) / QMAX  # kv_quant.AMAX_FLOOR: an all-zero part keeps finite codes (0)


@triton.jit
def encode(x, scale, QMAX: tl.constexpr, INT8: tl.constexpr):
    y = tl.minimum(tl.maximum(x / scale, -QMAX), QMAX)  # e4m3fn has no inf: a code past 448 would be NaN
    if INT8:  # a cast truncates toward zero; round first, ties away from zero as kv_quant.round_half_away
        y = tl.where(y >= 0, tl.floor(y + 0.5), -tl.floor(0.5 - y))
    return y


@triton.jit
def store_quantized(x, dst, offs, mask, scale_dst, QMAX: tl.constexpr, INT8: tl.constexpr):
    """x: one part of a row in float32, masked lanes 0."""
    scale = part_scale(tl.max(tl.abs(x), 0), QMAX)
    tl.store(dst + offs, encode(x, scale, QMAX, INT8).to(dst.dtype.element_ty), mask=mask)
    tl.store(scale_dst, scale)


def code_params(storage) -> dict:
    """The constexprs QMAX and INT8 of a cache's storage dtype (float8_e4m3fn or int8)."""
    import torch

    from lab.engine.kv_quant import QMAX

    return dict(QMAX=QMAX[storage], INT8=storage == torch.int8)
