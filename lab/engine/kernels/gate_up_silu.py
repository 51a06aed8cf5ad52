"""SwiGLU's first half in one kernel for decode: y (M, I) = silu(x @ W_gate^T + b_g) * (x @ W_up^T + b_u).

Why: at batch 1 the MLP ran the gate_up GEMV, which wrote a (1, 2I) intermediate, and then a
separate SiLU-and-multiply launch that read it back (~2 us inside a CUDA graph per layer). Here one
GEMV program owns BLOCK_N rows of the gate half of W13 *and* the matching rows of the up half, so
it holds both dot products of an output column at the end and applies the activation in its
epilogue: one launch, no intermediate. It streams W exactly as `gemv.py` does (same tiles, same
float32 accumulation); see there for why this shape of kernel reads at the card's bandwidth.

Contract: gate_up_silu(x (M, K), w13 (2I, K) = [gate | up] rows, bias (2I,) | None)
    == layers.silu_and_mul(F.linear(x, w13, bias)) with M <= gemv.MAX_M,
with the unfused path's roundings: gate and up are each rounded to x's dtype (as the (M, 2I)
intermediate was), silu(gate) is rounded before the product (as F.silu / the fused SiLU-mul
kernel do), the product rounded once. M == 1 multiplies on CUDA cores, M >= 2 with tl.dot (x^T
padded to 16 columns); there is no split-K (2I rows always fill the SMs at the real shapes).
Configs: `TUNED` (measured) else derived from `gemv.choose_config` for the (M, 2I, K) GEMV, with
half the rows per program (each program reads a gate row and an up row per output column).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from lab.engine.kernels.fused_ops import add_rms_norm_row
from lab.engine.kernels.gemv import MAX_M, NORM_MAX_K, _num_sms, choose_config, m_class, norm_prologue_config


@dataclass(frozen=True)
class GateUpConfig:
    block_n: int  # output columns (gate rows, and as many up rows) per program; >= 16 when M >= 2
    block_k: int  # columns of W per loop step (power of two)
    num_warps: int = 4
    num_stages: int = 2


# Measured winners keyed by (M class, I, K); scratch/bench_fused_decode.py --sweep prints lines to paste.
TUNED: dict[tuple[int, int, int], GateUpConfig] = {  # scratch/bench_fused_decode.py --sweep on an NVIDIA H200
    (1, 2816, 2048): GateUpConfig(2, 1024, 8, 2),  # V2-Lite shared experts: 7.5 vs 7.9 us
    (1, 10944, 2048): GateUpConfig(2, 1024, 8, 2),  # V2-Lite dense layer: 22.3 vs 25.1 us
}


# With the add + RMSNorm in the prologue (`gate_up_silu_add_rms_norm`), keyed by (I, K);
# scratch/bench_norm_prologue.py on an NVIDIA H200.
NORM_TUNED: dict[tuple[int, int], GateUpConfig] = {
    (8960, 1536): GateUpConfig(2, 2048, 4, 1),  # qwen-1.5B: 16.8 us vs 18.9 (plain 14.9 + norm launch 1.5)
}


@lru_cache(maxsize=1024)
def choose_gate_up_config(m: int, i: int, k: int, num_sms: int = 132) -> GateUpConfig:
    """The GEMV config of the unfused (2I, K) matrix, rows per program halved: same bytes per program."""
    tuned = TUNED.get((m_class(m), i, k))
    if tuned is not None:
        return tuned
    base = choose_config(m, 2 * i, k, num_sms)
    block_n = max(1, base.block_n // 2) if m == 1 else max(16, base.block_n // 2)
    return GateUpConfig(block_n, base.block_k, base.num_warps, base.num_stages)


def norm_prologue_gate_up_config(i: int, k: int, num_sms: int = 132) -> GateUpConfig:
    """`NORM_TUNED`, else `gemv.norm_prologue_config` of the (2I, K) matrix (the whole row in one K step),
    rows per program halved as in `choose_gate_up_config`."""
    if (i, k) in NORM_TUNED:
        return NORM_TUNED[(i, k)]
    base = norm_prologue_config(2 * i, k, num_sms)
    return GateUpConfig(max(1, base.block_n // 2), base.block_k, base.num_warps, base.num_stages)


@triton.jit
def _gate_up_silu_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, res_ptr, nw_ptr, res_out_ptr, eps,
    M, I, K, stride_xm, stride_wn, stride_ym,
    K_TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr, EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    NORM: tl.constexpr = False, HAS_RES: tl.constexpr = False,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < I  # constant along K: keeps the 16-byte vector loads
    gate_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn  # (BLOCK_N, 1)
    up_rows = w_ptr + (offs_n + I).to(tl.int64)[:, None] * stride_wn  # the same columns' up rows
    offs_kb = tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    if USE_DOT:
        acc_g = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc_g = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for i in range(0, K_TILES):
        offs_k = i * BLOCK_K + offs_kb
        if EVEN_K:
            w_mask = n_mask[:, None]
        else:
            k_mask = offs_k < K
            w_mask = n_mask[:, None] & k_mask[None, :]
        wg = tl.load(gate_rows + offs_k[None, :], mask=w_mask, other=0.0)
        wu = tl.load(up_rows + offs_k[None, :], mask=w_mask, other=0.0)
        if USE_DOT:
            x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
            if EVEN_K:
                x = tl.load(x_ptrs, mask=m_mask[:, None], other=0.0)
            else:
                x = tl.load(x_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            xt = tl.trans(x.to(wg.dtype))
            if IEEE:
                acc_g = tl.dot(wg, xt, acc_g, input_precision="ieee")
                acc_u = tl.dot(wu, xt, acc_u, input_precision="ieee")
            else:
                acc_g = tl.dot(wg, xt, acc_g)
                acc_u = tl.dot(wu, xt, acc_u)
        else:
            if NORM:  # K_TILES == 1: the whole row, normalized here (program 0 stores the new residual)
                x = add_rms_norm_row(x_ptr, res_ptr, nw_ptr, res_out_ptr, offs_k, offs_k < K, K, eps,
                                     tl.program_id(0) == 0, HAS_RES).to(tl.float32)[None, :]
            elif EVEN_K:
                x = tl.load(x_ptr + offs_k).to(tl.float32)[None, :]  # (1, BLOCK_K): the one row (M == 1)
            else:
                x = tl.load(x_ptr + offs_k, mask=k_mask, other=0.0).to(tl.float32)[None, :]
            acc_g += wg.to(tl.float32) * x
            acc_u += wu.to(tl.float32) * x
    if USE_DOT:
        gate = acc_g  # (BLOCK_N, BLOCK_M)
        up = acc_u
    else:
        gate = tl.sum(acc_g, axis=1)[:, None]  # (BLOCK_N, 1): BLOCK_M == 1
        up = tl.sum(acc_u, axis=1)[:, None]
    if HAS_BIAS:
        gate += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        up += tl.load(b_ptr + I + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
    # the unfused path's roundings: gate_up stored in the output dtype, F.silu rounds, then * up rounds
    out_ty = y_ptr.dtype.element_ty
    gate = gate.to(out_ty).to(tl.float32)
    up = up.to(out_ty).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(out_ty)
    out = (silu.to(tl.float32) * up).to(out_ty)
    mask = n_mask[:, None] & m_mask[None, :]
    tl.store(y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None], out, mask=mask)


def gate_up_silu(
    x: torch.Tensor, w13: torch.Tensor, bias: torch.Tensor | None = None, config: GateUpConfig | None = None
) -> torch.Tensor:
    """x (M, K) with M <= MAX_M, w13 (2I, K) [gate | up] -> silu(gate) * up, (M, I) in x's dtype."""
    m, k = x.shape
    two_i = w13.shape[0]
    if m > MAX_M or w13.shape[1] != k or two_i % 2:
        raise ValueError(f"gate_up_silu takes x (M <= {MAX_M}, K) and W13 (2I, K); "
                         f"got {tuple(x.shape)}, {tuple(w13.shape)}")
    i = two_i // 2
    if x.stride(-1) != 1:
        x = x.contiguous()
    if w13.stride(-1) != 1 or w13.stride(0) != k:
        w13 = w13.contiguous()
    y = torch.empty(m, i, dtype=x.dtype, device=x.device)
    if m == 0 or i == 0:
        return y
    cfg = config or choose_gate_up_config(m, i, k, _num_sms(x.device))
    use_dot = m > 1
    if use_dot and cfg.block_n < 16:
        raise ValueError(f"M >= 2 uses tl.dot, which needs block_n >= 16; got {cfg}")
    k_tiles = triton.cdiv(k, cfg.block_k)
    _gate_up_silu_kernel[(triton.cdiv(i, cfg.block_n),)](
        x, w13, bias if bias is not None else y, y, x, x, x, 0.0, m, i, k, x.stride(0), w13.stride(0), y.stride(0),
        K_TILES=k_tiles, BLOCK_M=16 if use_dot else 1, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        USE_DOT=use_dot, EVEN_K=k_tiles * cfg.block_k == k, HAS_BIAS=bias is not None,
        IEEE=w13.dtype == torch.float32, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return y


def gate_up_silu_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor, eps: float, w13: torch.Tensor,
    bias: torch.Tensor | None = None, config: GateUpConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One row: (gate_up_silu(RMSNorm(x + residual)), x + residual), the add and norm in each program's
    prologue (see `gemv.gemv_add_rms_norm`, same numbers as `add_rms_norm_triton`); the new residual is
    a new tensor."""
    k = x.shape[-1]
    two_i = w13.shape[0]
    if x.shape != (1, k) or residual.shape != x.shape or w13.shape[1] != k or two_i % 2 or k > NORM_MAX_K:
        raise ValueError(f"gate_up_silu_add_rms_norm takes one row x (1, K <= {NORM_MAX_K}), a residual like it and "
                         f"W13 (2I, K); got {tuple(x.shape)}, {tuple(residual.shape)}, {tuple(w13.shape)}")
    i = two_i // 2
    x, residual = x.contiguous(), residual.contiguous()
    if w13.stride(-1) != 1 or w13.stride(0) != k:
        w13 = w13.contiguous()
    y = torch.empty(1, i, dtype=x.dtype, device=x.device)
    res_out = torch.empty_like(residual)
    cfg = config or norm_prologue_gate_up_config(i, k, _num_sms(x.device))
    if cfg.block_k < k:
        raise ValueError(f"gate_up_silu_add_rms_norm needs the whole row in one K step: block_k >= {k}, got {cfg}")
    _gate_up_silu_kernel[(triton.cdiv(i, cfg.block_n),)](
        x, w13, bias if bias is not None else y, y, residual, norm_weight, res_out, eps, 1, i, k, k, k, i,
        K_TILES=1, BLOCK_M=1, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        USE_DOT=False, EVEN_K=cfg.block_k == k, HAS_BIAS=bias is not None, IEEE=False,
        NORM=True, HAS_RES=True, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return y, res_out
