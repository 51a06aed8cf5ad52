"""W8A16 skinny GEMM for decode: y (M, N) = x (M, K) @ (W_int8 (N, K) * scale (N,)[:, None])^T (+ bias), M <= 16.

Why: decode at small batch is a read of the weights; int8 codes are half of bf16's bytes, so the same
bandwidth-bound loop as `gemv.py` (its configs, `choose_config`, and its split-K reduce) reads twice the weights
per second. Each program streams BLOCK_N rows of codes along K, converts them in registers (to float32 for the
M == 1 multiply-add, to x's dtype for the M >= 2 tensor-core dot: int8 codes are exact in bf16/fp16), and
accumulates in float32; the row's scale multiplies the accumulator once, at the end (a per-row scale factors
out of the sum), before the bias. With split-K each split scales its partial, and `gemv._reduce_kernel` adds
the partials and the bias.

Contract: int8_gemv(x (M, K), w (N, K) int8, scale (N,) float32, bias (N,) | None, out_dtype) ==
F.linear(x, w.float() * scale[:, None], bias) with float32 accumulation, rounded once to out_dtype (x's dtype by
default). x's last dim and W must be contiguous. Oracle: that float32 expression (`int8.dequantize_int8`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.gemv import MAX_M, GemvConfig, prepare_launch, reduce_splits


@triton.jit
def _int8_gemv_kernel(
    x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, part_ptr,
    M, N, K, stride_xm, stride_wn, stride_ym,
    K_PER_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_kb = tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    if USE_DOT:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for i in range(0, K_PER_SPLIT // BLOCK_K):
        offs_k = pid_k * K_PER_SPLIT + i * BLOCK_K + offs_kb
        k_mask = offs_k < K
        w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0)
        if USE_DOT:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :],
                        other=0.0)
            if IEEE:
                acc = tl.dot(w.to(x.dtype), tl.trans(x), acc, input_precision="ieee")
            else:
                acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
        else:
            x = tl.load(x_ptr + offs_k, mask=k_mask, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    if USE_DOT:
        out = acc  # (BLOCK_N, BLOCK_M)
    else:
        out = tl.sum(acc, axis=1)[:, None]  # (BLOCK_N, 1)
    out = out * tl.load(s_ptr + offs_n, mask=n_mask, other=0.0)[:, None]
    mask = n_mask[:, None] & m_mask[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            out += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        tl.store(y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None], out.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(part_ptr + (pid_k * M + offs_m[None, :]) * N + offs_n[:, None], out, mask=mask)


def int8_gemv(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None, config: GemvConfig | None = None,
) -> torch.Tensor:
    """x (M, K) with M <= MAX_M, int8 weight (N, K), float32 scale (N,) -> (M, N) in out_dtype (x's by default)."""
    m, k = x.shape
    n = weight.shape[0]
    if m > MAX_M or weight.shape[1] != k or weight.dtype != torch.int8 or scale.shape != (n,):
        raise ValueError(f"int8_gemv takes x (M <= {MAX_M}, K), int8 W (N, K) and scale (N,); got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)} {weight.dtype}, {tuple(scale.shape)}")
    launch = prepare_launch(x, weight, bias, out_dtype, config)
    if isinstance(launch, torch.Tensor):
        return launch
    x, weight, y, cfg, split_k = launch.x, launch.weight, launch.y, launch.cfg, launch.split_k
    b = bias if bias is not None else y  # a dummy pointer when HAS_BIAS is off
    _int8_gemv_kernel[(triton.cdiv(n, cfg.block_n), split_k)](
        x, weight, scale, b, y, launch.part, m, n, k, x.stride(0), weight.stride(0), y.stride(0),
        K_PER_SPLIT=launch.k_per_split, BLOCK_M=16 if launch.use_dot else 1, BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k, SPLIT_K=split_k, USE_DOT=launch.use_dot, HAS_BIAS=bias is not None and split_k == 1,
        IEEE=x.dtype == torch.float32, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return reduce_splits(launch, bias)
