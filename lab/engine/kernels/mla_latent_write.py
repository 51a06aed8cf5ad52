"""MLA decode's step between the projections and attention in one kernel: RoPE on q_pe, and the
latent cache row [RMSNorm(c_kv) | RoPE(k_pe)] written at each token's slot.

Why: a MLA layer's decode step launched five small kernels there: rotate q_pe, kv_a_layernorm,
rotate k_pe, concatenate, write the cache row; each is a few KB and a launch (~2 us in a graph).

Contract: mla_rope_latent_write_triton(q_pe (T, H, rope), kv_a (T, R + rope) = [c_kv | k_pe] before
the norm and RoPE, norm_weight (R,), eps, cos, sin (T, rope/2), interleaved, cache (N, bs, R + rope),
slot_mapping (T,), q_out (T, H, rope) | None) -> q_pe rotated, written into q_out (a view with a contiguous
last dim, e.g. the rope columns of the absorbed query) or a new contiguous tensor; as a side effect each
token's cache row becomes [RMSNorm(c_kv) | RoPE(k_pe)] (a negative slot, graph padding, writes
nothing). Same float32 math and roundings as `fused_ops.rms_norm_triton`, `fused_ops.rotate_triton`
and `kv_write.write_kv_triton` (each rounded to kv_a's dtype, then stored in the cache's).
The normalized c_kv and rotated k_pe are not returned: absorbed decode reads the cache only.
Program (t, h): h < H rotates head h of q_pe; h == H normalizes, rotates and writes token t's row.
An 8-bit cache (`kv_quant.QuantizedCache` with parts (R, rope), KV_8BIT) gets the same rounded c_kv and k_pe
coded with one scale each, as `kv_write.write_kv_triton` codes the unfused path's row.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.fused_ops import rope_pairs, rotate_pair, rotate_store
from lab.engine.kernels.kv_quant import code_params, encode, part_scale, store_quantized
from lab.engine.kv_quant import QuantizedCache


@triton.jit
def _mla_rope_latent_write_kernel(
    q_pe_ptr, kv_ptr, w_ptr, cos_ptr, sin_ptr, slot_ptr, q_out_ptr, cache_ptr,
    stride_qt, stride_qh, stride_qot, stride_qoh, stride_kvt, stride_c_slot, num_heads, eps,
    scale_ptr,  # (slots, 2) float32 scales [c_kv, k_pe] when KV_8BIT
    RANK: tl.constexpr, BLOCK_R: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr, INTERLEAVED: tl.constexpr,
    KV_8BIT: tl.constexpr, QMAX: tl.constexpr, INT8: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    cos, sin, i1, i2, mask = rope_pairs(cos_ptr, sin_ptr, t, HALF, BLOCK, INTERLEAVED)
    if h < num_heads:
        rotate_store(q_pe_ptr + t * stride_qt + h * stride_qh, q_out_ptr + t * stride_qot + h * stride_qoh,
                     cos, sin, i1, i2, mask)
    else:
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot >= 0:
            kv_ty = kv_ptr.dtype.element_ty  # the unfused kernels round to their input's dtype
            row = kv_ptr + t * stride_kvt
            dst = cache_ptr + slot * stride_c_slot
            offs = tl.arange(0, BLOCK_R)
            r_mask = offs < RANK
            x = tl.load(row + offs, mask=r_mask, other=0.0).to(tl.float32)
            y = (x * tl.rsqrt(tl.sum(x * x, 0) / RANK + eps)).to(kv_ty)  # rounded before the weight, as RMSNorm
            w = tl.load(w_ptr + offs, mask=r_mask, other=0.0)
            c_kv = (w.to(tl.float32) * y.to(tl.float32)).to(kv_ty)
            if KV_8BIT:  # c_kv and k_pe coded apart, each with its own scale
                store_quantized(c_kv.to(tl.float32), dst, offs, r_mask, scale_ptr + slot * 2, QMAX, INT8)
                r1, r2 = rotate_pair(row + RANK, cos, sin, i1, i2, mask)
                r1 = r1.to(kv_ty).to(tl.float32)
                r2 = r2.to(kv_ty).to(tl.float32)
                pe_scale = part_scale(tl.maximum(tl.max(tl.abs(r1), 0), tl.max(tl.abs(r2), 0)), QMAX)
                tl.store(dst + RANK + i1, encode(r1, pe_scale, QMAX, INT8).to(cache_ptr.dtype.element_ty), mask=mask)
                tl.store(dst + RANK + i2, encode(r2, pe_scale, QMAX, INT8).to(cache_ptr.dtype.element_ty), mask=mask)
                tl.store(scale_ptr + slot * 2 + 1, pe_scale)
            else:
                tl.store(dst + offs, c_kv.to(cache_ptr.dtype.element_ty), mask=r_mask)
                r1, r2 = rotate_pair(row + RANK, cos, sin, i1, i2, mask)
                tl.store(dst + RANK + i1, r1.to(kv_ty).to(cache_ptr.dtype.element_ty), mask=mask)
                tl.store(dst + RANK + i2, r2.to(kv_ty).to(cache_ptr.dtype.element_ty), mask=mask)


def mla_rope_latent_write_triton(
    q_pe: torch.Tensor, kv_a: torch.Tensor, norm_weight: torch.Tensor, eps: float, cos: torch.Tensor,
    sin: torch.Tensor, interleaved: bool, cache: torch.Tensor | QuantizedCache, slot_mapping: torch.Tensor,
    q_out: torch.Tensor | None = None,
) -> torch.Tensor:
    num_tokens, num_heads, rope = q_pe.shape
    rank = norm_weight.shape[0]
    if kv_a.shape != (num_tokens, rank + rope) or cos.shape[-1] * 2 != rope or cache.shape[-1] != rank + rope:
        raise ValueError(f"mla_rope_latent_write_triton needs q_pe (T, H, rope), kv_a (T, R + rope), cos (T, rope/2), "
                         f"cache (N, bs, R + rope); got {tuple(q_pe.shape)}, {tuple(kv_a.shape)}, "
                         f"{tuple(cos.shape)}, {tuple(cache.shape)}")
    q_pe = q_pe if q_pe.stride(-1) == 1 else q_pe.contiguous()
    kv_a = kv_a if kv_a.stride(-1) == 1 else kv_a.contiguous()
    quantized = isinstance(cache, QuantizedCache)
    if quantized and cache.groups != (rank, rope):
        raise ValueError(f"mla_rope_latent_write_triton needs an 8-bit cache scaled in parts ({rank}, {rope}), "
                         f"got {cache.groups}")
    scales = cache.scale.view(-1, 2) if quantized else None  # (slots, 2)
    codes = code_params(cache.data.dtype) if quantized else dict(QMAX=1.0, INT8=False)
    flat = (cache.data if quantized else cache).view(-1, rank + rope)  # (slots, R + rope): fails loudly if not flat
    if q_out is None:
        q_out = torch.empty(num_tokens, num_heads, rope, dtype=q_pe.dtype, device=q_pe.device)
    elif q_out.shape != q_pe.shape or q_out.stride(-1) != 1:
        raise ValueError(f"mla_rope_latent_write_triton's q_out must be {tuple(q_pe.shape)} with a contiguous last "
                         f"dim; got {tuple(q_out.shape)} with strides {q_out.stride()}")
    if num_tokens:
        _mla_rope_latent_write_kernel[(num_tokens, num_heads + 1)](
            q_pe, kv_a, norm_weight, cos.contiguous(), sin.contiguous(), slot_mapping, q_out, flat,
            q_pe.stride(0), q_pe.stride(1), q_out.stride(0), q_out.stride(1), kv_a.stride(0), flat.stride(0), num_heads, eps,
            scales if quantized else flat, KV_8BIT=quantized, **codes,
            RANK=rank, BLOCK_R=triton.next_power_of_2(rank), HALF=rope // 2, BLOCK=triton.next_power_of_2(rope // 2),
            INTERLEAVED=interleaved, num_warps=4,
        )
    return q_out
