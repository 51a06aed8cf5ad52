"""Fused elementwise kernels for the decode step: RMSNorm (alone or after the residual add), rotary
embedding, SiLU-and-multiply.

Why: at batch 1 a decode step is ~1,300 kernels, most of them elementwise (RMSNorm is six torch
ops, RoPE about ten); inside a CUDA graph each still costs a few microseconds, which adds up to
more than reading the weights. One kernel per op cuts that several-fold.

Contract: each equals its torch counterpart in `models/layers.py` / `models/rope.py` to the
rounding of the output dtype (same float32 math, same casts):
  rms_norm_triton(x (T, N), weight (N,), eps)        == RMSNorm.forward
  add_rms_norm_triton(x, residual (T, N), weight, eps) == (RMSNorm.forward(residual + x), residual + x),
      the sum rounded to residual's dtype and written into `residual` in place (as vLLM's
      fused_add_rms_norm), so the residual stream is one buffer carried through the layers
  rotate_triton(x (T, H, D), cos, sin (T, D/2), interleaved) == Rotation.apply (new contiguous tensor)
  silu_and_mul_triton(gate_up (T, 2I))                == layers.silu_and_mul
Inputs may be strided views with a contiguous last dim (q, k, v are column slices of one GEMM).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def add_rms_norm_row(x_ptr, res_ptr, w_ptr, res_out_ptr, offs, mask, n, eps, write, HAS_RES: tl.constexpr):
    """RMSNorm(x + residual) of one row in x's dtype (the whole row in `offs`); `write` (a scalar test)
    stores x + residual at res_out. Without HAS_RES the row is normalized as it is. The rounding points
    are transformers': the sum in the residual's dtype, the normalized row cast back before the weight.
    Kernels call it for their input row: `_add_rms_norm_kernel`, and the GEMV prologues (`gemv.py`)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if HAS_RES:
        res = tl.load(res_ptr + offs, mask=mask, other=0.0)
        h = (res.to(tl.float32) + x.to(tl.float32)).to(res_ptr.dtype.element_ty)  # as `hidden + out` rounds
        if write:  # a branch, not `mask & write`: Triton 3.9's interpreter rejects a block mask and-ed with a scalar
            tl.store(res_out_ptr + offs, h, mask=mask)
    else:
        h = x
    hf = h.to(tl.float32)
    r = tl.rsqrt(tl.sum(hf * hf, 0) / n + eps)
    y = (hf * r).to(x_ptr.dtype.element_ty)  # cast back before the weight, as transformers does
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    return (w.to(tl.float32) * y.to(tl.float32)).to(x_ptr.dtype.element_ty)


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, stride_x, stride_o, n, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x_row = x_ptr + row * stride_x
    out = add_rms_norm_row(x_row, x_row, w_ptr, x_row, offs, mask, n, eps, False, HAS_RES=False)
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](x2, weight, out, x2.stride(0), out.stride(0), n, eps,
                                         BLOCK=triton.next_power_of_2(n), num_warps=4)
    return out.view(x.shape)


@triton.jit
def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, stride_x, stride_r, stride_o, n, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    res_row = res_ptr + row * stride_r
    out = add_rms_norm_row(x_ptr + row * stride_x, res_row, w_ptr, res_row, offs, mask, n, eps, True, HAS_RES=True)
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm_triton(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual += x (in place); returns (RMSNorm(residual), residual). Both (T, N), same dtype."""
    n = x.shape[-1]
    if residual.dim() != 2 or residual.stride(-1) != 1 or x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(f"add_rms_norm_triton needs x and residual alike, (T, N) with a contiguous last dim; "
                         f"got {tuple(x.shape)} {x.dtype} and {tuple(residual.shape)} {residual.dtype}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
    if residual.shape[0]:
        _add_rms_norm_kernel[(residual.shape[0],)](
            x, residual, weight, out, x.stride(0), residual.stride(0), out.stride(0), n, eps,
            BLOCK=triton.next_power_of_2(n), num_warps=4,
        )
    return out, residual


@triton.jit
def rope_pairs(cos_ptr, sin_ptr, t, HALF: tl.constexpr, BLOCK: tl.constexpr, INTERLEAVED: tl.constexpr):
    """Token t's cos and sin (T, D/2 rows) and the channel pairs they rotate: (i1, i2, mask)."""
    i = tl.arange(0, BLOCK)
    mask = i < HALF
    cos = tl.load(cos_ptr + t * HALF + i, mask=mask, other=0.0)
    sin = tl.load(sin_ptr + t * HALF + i, mask=mask, other=0.0)
    if INTERLEAVED:  # pairs (2i, 2i+1)
        i1 = 2 * i
        i2 = 2 * i + 1
    else:  # pairs (i, i + D/2)
        i1 = i
        i2 = i + HALF
    return cos, sin, i1, i2, mask


@triton.jit
def rotate_pair(src, cos, sin, i1, i2, mask):
    """(x1 cos - x2 sin, x2 cos + x1 sin) in float32 for the channel pairs (i1, i2) at src."""
    x1 = tl.load(src + i1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + i2, mask=mask, other=0.0).to(tl.float32)
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


@triton.jit
def rotate_store(src, dst, cos, sin, i1, i2, mask):
    """One head rotated from src into dst (rounded to dst's dtype)."""
    r1, r2 = rotate_pair(src, cos, sin, i1, i2, mask)
    tl.store(dst + i1, r1.to(dst.dtype.element_ty), mask=mask)
    tl.store(dst + i2, r2.to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _rotate_kernel(
    x_ptr, cos_ptr, sin_ptr, out_ptr, stride_xt, stride_xh, num_heads,
    HALF: tl.constexpr, BLOCK: tl.constexpr, INTERLEAVED: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    cos, sin, i1, i2, mask = rope_pairs(cos_ptr, sin_ptr, t, HALF, BLOCK, INTERLEAVED)
    rotate_store(x_ptr + t * stride_xt + h * stride_xh, out_ptr + (t * num_heads + h) * (2 * HALF),
                 cos, sin, i1, i2, mask)


def rotate_triton(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    num_tokens, num_heads, dim = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty(num_tokens, num_heads, dim, dtype=x.dtype, device=x.device)
    if num_tokens:
        _rotate_kernel[(num_tokens, num_heads)](
            x, cos.contiguous(), sin.contiguous(), out, x.stride(0), x.stride(1), num_heads,
            HALF=dim // 2, BLOCK=triton.next_power_of_2(dim // 2), INTERLEAVED=interleaved, num_warps=1,
        )
    return out


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, stride_x, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < n
    gate = tl.load(x_ptr + row * stride_x + col, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n + col, mask=mask, other=0.0)
    silu = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty)  # F.silu rounds to the dtype, then * up
    out = (silu.to(tl.float32) * up.to(tl.float32)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * n + col, out, mask=mask)


def silu_and_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    n = gate_up.shape[-1] // 2
    x = gate_up.reshape(-1, 2 * n)
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty(x.shape[0], n, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    if x.shape[0]:
        _silu_mul_kernel[(x.shape[0], triton.cdiv(n, block))](x, out, x.stride(0), n, BLOCK=block, num_warps=4)
    return out.view(*gate_up.shape[:-1], n)
