"""Split-K ("flash decoding") bookkeeping shared by the decode kernels.

At batch 1 a decode step has only B x heads independent softmaxes, far fewer than the GPU's SMs,
so each sequence's context is cut into `num_splits` ranges that run as separate programs. Each
writes its partial state: running max m, sum of exp l, and unnormalized output acc. This module
picks the split count and merges the partials: out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s.
A split with no keys has m = -inf, l = 0, acc = 0 and drops out; a sequence with no keys gives 0.
`online_softmax_update` is the per-block update of that state, shared by the GQA and MLA kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

TARGET_PROGRAMS = 512  # about 4 programs per SM on an H100 (132 SMs)
MAX_SPLITS = 16


def choose_num_splits(batch: int, heads_programs: int, width_blocks: int) -> int:
    """Splits so that batch x heads x splits fills the GPU; depends only on shapes (graph-safe)."""
    want = triton.cdiv(TARGET_PROGRAMS, max(batch * heads_programs, 1))
    return max(1, min(want, MAX_SPLITS, width_blocks))


@triton.jit
def _combine_kernel(
    m_ptr, l_ptr, acc_ptr, out_ptr,  # m, l: (B, H, S) f32; acc: (B, H, S, DV) f32; out: (B, H, DV)
    stride_ob, stride_oh, num_heads, num_splits,
    BLOCK_S: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_DV)
    s_mask = offs_s < num_splits
    d_mask = offs_d < DV
    base = (b * num_heads + h) * num_splits
    m = tl.load(m_ptr + base + offs_s, mask=s_mask, other=float("-inf"))
    l = tl.load(l_ptr + base + offs_s, mask=s_mask, other=0.0)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # no keys at all: every weight is exp(-inf) = 0
    w = tl.exp(m - m_max)  # (S,)
    denom = tl.sum(w * l, 0)
    acc = tl.load(acc_ptr + (base + offs_s[:, None]) * DV + offs_d[None, :], mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def online_softmax_update(s, t_mask, m_i, l_i, acc, v, PRECISION: tl.constexpr):
    """One key block of a split's online softmax, the loop body both decode kernels share.

    s (ROWS, BLOCK_T) float32 scaled scores, t_mask (BLOCK_T,) which keys exist, v (BLOCK_T, DV)
    the block's values; (m_i, l_i, acc) the running max, sum of exp and unnormalized output,
    returned updated. Inlined by Triton: the same instructions as the loop bodies it replaced.
    """
    s = tl.where(t_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


def dot_precision(dtype: torch.dtype) -> str:
    """float32 caches keep full precision (the oracle tests); tf32 would round scores to 10 bits."""
    return "ieee" if dtype == torch.float32 else "tf32"


def partial_buffers(batch: int, heads: int, num_splits: int, dv: int, device: torch.device):
    """(m, l, acc) float32 scratch for the split-K partial states."""
    m = torch.empty(batch, heads, num_splits, dtype=torch.float32, device=device)
    l = torch.empty_like(m)
    acc = torch.empty(batch, heads, num_splits, dv, dtype=torch.float32, device=device)
    return m, l, acc


def combine_splits(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    batch, heads, num_splits, dv = acc.shape
    _combine_kernel[(batch, heads)](
        m, l, acc, out, out.stride(0), out.stride(1), heads, num_splits,
        BLOCK_S=MAX_SPLITS, DV=dv,  # fixed tile: one compile whatever the split count
        BLOCK_DV=triton.next_power_of_2(dv),
    )
    return out
