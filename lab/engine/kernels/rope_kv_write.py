"""RoPE on q and k plus the paged KV-cache write, one kernel for a grouped-query decode step.

Why: a GQA layer's decode step launched three small kernels between the qkv GEMV and attention:
rotate q, rotate k, write k and v to the cache (v's write reads v again). Each moves a few KB and
costs its launch (~2 us inside a CUDA graph); here one launch does all three.

Contract: rope_kv_write_triton(q (T, H, D), k (T, Hkv, D), v (T, Hkv, Dv), cos, sin (T, D/2),
interleaved, k_cache (N, bs, Hkv, D), v_cache (N, bs, Hkv, Dv), slot_mapping (T,)) -> q rotated,
a new contiguous (T, H, D) tensor, and as side effects the rotated k and the plain v stored at each
token's cache slot; a negative slot (padding of a CUDA-graph batch) writes nothing. Same float32
math and casts as `fused_ops.rotate_triton` + `kv_write.write_kv_triton`, so the results are bitwise
those of the unfused kernels. q, k, v may be strided views (column slices of the fused qkv GEMM
output) with a contiguous last dim. Rotated k is not returned: decode attention reads the cache.
Program (t, h): h < H rotates query head h; H <= h < H + Hkv rotates key head h - H and copies
value head h - H into the cache.
An 8-bit cache (`kv_quant.QuantizedCache`, KV_8BIT) gets each key head rotated and rounded to k's dtype (as
the unfused path's RoPE output), then coded with its own scale, and each value head the same, as
`kv_write.write_kv_triton` codes them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.fused_ops import rope_pairs, rotate_pair, rotate_store
from lab.engine.kernels.kv_quant import code_params, encode, part_scale, store_quantized
from lab.engine.kv_quant import QuantizedCache


@triton.jit
def _rope_kv_write_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, slot_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kc_slot, stride_kc_h, stride_vc_slot, stride_vc_h, num_heads,
    k_scale_ptr, v_scale_ptr, stride_ks_slot, stride_vs_slot,  # (slots, Hkv) float32 scales when KV_8BIT
    HALF: tl.constexpr, BLOCK: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    INTERLEAVED: tl.constexpr, KV_8BIT: tl.constexpr, QMAX: tl.constexpr, INT8: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    cos, sin, i1, i2, mask = rope_pairs(cos_ptr, sin_ptr, t, HALF, BLOCK, INTERLEAVED)
    if h < num_heads:
        rotate_store(q_ptr + t * stride_qt + h * stride_qh, q_out_ptr + (t * num_heads + h) * (2 * HALF),
                     cos, sin, i1, i2, mask)
    else:
        kvh = h - num_heads
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot >= 0:
            if KV_8BIT:
                kv_ty = k_ptr.dtype.element_ty
                r1, r2 = rotate_pair(k_ptr + t * stride_kt + kvh * stride_kh, cos, sin, i1, i2, mask)
                r1 = r1.to(kv_ty).to(tl.float32)  # rounded as RoPE's output is before the unfused write codes it
                r2 = r2.to(kv_ty).to(tl.float32)
                scale = part_scale(tl.maximum(tl.max(tl.abs(r1), 0), tl.max(tl.abs(r2), 0)), QMAX)
                k_dst = k_cache_ptr + slot * stride_kc_slot + kvh * stride_kc_h
                tl.store(k_dst + i1, encode(r1, scale, QMAX, INT8).to(k_cache_ptr.dtype.element_ty), mask=mask)
                tl.store(k_dst + i2, encode(r2, scale, QMAX, INT8).to(k_cache_ptr.dtype.element_ty), mask=mask)
                tl.store(k_scale_ptr + slot * stride_ks_slot + kvh, scale)
                offs_v = tl.arange(0, BLOCK_DV)
                v_mask = offs_v < DV
                v = tl.load(v_ptr + t * stride_vt + kvh * stride_vh + offs_v, mask=v_mask, other=0.0).to(tl.float32)
                store_quantized(v, v_cache_ptr + slot * stride_vc_slot + kvh * stride_vc_h, offs_v, v_mask,
                                v_scale_ptr + slot * stride_vs_slot + kvh, QMAX, INT8)
            else:
                rotate_store(k_ptr + t * stride_kt + kvh * stride_kh, k_cache_ptr + slot * stride_kc_slot + kvh * stride_kc_h,
                             cos, sin, i1, i2, mask)
                offs_v = tl.arange(0, BLOCK_DV)
                v_mask = offs_v < DV
                v = tl.load(v_ptr + t * stride_vt + kvh * stride_vh + offs_v, mask=v_mask)
                tl.store(v_cache_ptr + slot * stride_vc_slot + kvh * stride_vc_h + offs_v,
                         v.to(v_cache_ptr.dtype.element_ty), mask=v_mask)


def rope_kv_write_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool,
    k_cache: torch.Tensor | QuantizedCache, v_cache: torch.Tensor | QuantizedCache, slot_mapping: torch.Tensor,
) -> torch.Tensor:
    num_tokens, num_heads, dim = q.shape
    num_kv_heads, dv = v.shape[1], v.shape[2]
    if k.shape != (num_tokens, num_kv_heads, dim) or cos.shape[-1] * 2 != dim or dim % 2:
        raise ValueError(f"rope_kv_write_triton needs q (T, H, D), k (T, Hkv, D), cos (T, D/2); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(cos.shape)}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    quantized = isinstance(k_cache, QuantizedCache)
    if quantized:  # codes as the cache, scales (slots, Hkv)
        ks, vs = k_cache.scale.view(-1, num_kv_heads), v_cache.scale.view(-1, num_kv_heads)
        codes = code_params(k_cache.data.dtype)
        k_cache, v_cache = k_cache.data, v_cache.data
    kc = k_cache.view(-1, num_kv_heads, dim)  # (slots, Hkv, D): fails loudly on a non-flat cache
    vc = v_cache.view(-1, num_kv_heads, dv)
    if not quantized:  # the scale arguments are never read: any pointer, no strides
        ks, vs, codes = kc, vc, dict(QMAX=1.0, INT8=False)
    q_out = torch.empty(num_tokens, num_heads, dim, dtype=q.dtype, device=q.device)
    if num_tokens:
        _rope_kv_write_kernel[(num_tokens, num_heads + num_kv_heads)](
            q, k, v, cos.contiguous(), sin.contiguous(), slot_mapping, q_out, kc, vc,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), num_heads,
            ks, vs, ks.stride(0) if quantized else 0, vs.stride(0) if quantized else 0,
            HALF=dim // 2, BLOCK=triton.next_power_of_2(dim // 2), DV=dv, BLOCK_DV=triton.next_power_of_2(dv),
            INTERLEAVED=interleaved, KV_8BIT=quantized, num_warps=1, **codes,
        )
    return q_out
