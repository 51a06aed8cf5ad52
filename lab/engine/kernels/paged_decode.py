"""Paged decode attention for grouped-query heads (Llama / Qwen2), split-K, one query per sequence.

Contract: `gqa_decode_triton(q (B, H, D), k_cache (N, bs, Hkv, D), v_cache (N, bs, Hkv, Dv),
block_tables (B, W) int32, seq_lens (B,) int32, scale) -> (B, H, Dv)` equals
`decode_attention.gqa_decode_attention_torch` (a seq len of 0 gives zeros). Program (b, kv head,
split) loads the K/V block of its kv head once for all G query heads of the group (the point of
GQA: K/V are read once per group, not per head), keeps an online softmax in float32, and writes
its partial state; `split_k.combine_splits` merges the splits. The group is padded to 16 rows so
the two products run on tensor cores (`tl.dot` needs 16 x 16 tiles).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.split_k import (
    choose_num_splits, combine_splits, dot_precision, online_softmax_update, partial_buffers,
)


@triton.jit
def _gqa_partial_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, seq_lens_ptr, m_ptr, l_ptr, acc_ptr, scale,
    stride_qb, stride_qh, stride_kn, stride_kt, stride_kh, stride_vn, stride_vt, stride_vh, stride_tb,
    num_heads, num_splits,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
    DV: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_SIZE: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + b)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_t = tl.arange(0, BLOCK_SIZE)
    g_mask = offs_g < GROUP
    d_mask = offs_d < D
    dv_mask = offs_dv < DV
    heads = kvh * GROUP + offs_g  # query heads of this kv head
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_G, BLOCK_D)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], tl.float32)
    num_blocks = tl.cdiv(seq_len, BLOCK_SIZE)
    blocks_per_split = tl.cdiv(num_blocks, num_splits)  # from this sequence's own length, not the table width
    first = split * blocks_per_split
    last = tl.minimum(first + blocks_per_split, num_blocks)
    for blk in range(first, last):
        block_id = tl.load(table_ptr + b * stride_tb + blk).to(tl.int64)
        pos = blk * BLOCK_SIZE + offs_t
        t_mask = pos < seq_len
        k = tl.load(k_ptr + block_id * stride_kn + offs_t[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=t_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_SIZE, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_G, BLOCK_SIZE) float32
        v = tl.load(v_ptr + block_id * stride_vn + offs_t[:, None] * stride_vt + kvh * stride_vh + offs_dv[None, :],
                    mask=t_mask[:, None] & dv_mask[None, :], other=0.0)  # (BLOCK_SIZE, BLOCK_DV)
        m_i, l_i, acc = online_softmax_update(s, t_mask, m_i, l_i, acc, v, PRECISION)
    part = (b * num_heads + heads) * num_splits + split  # (BLOCK_G,) rows of the (B, H, S) partials
    tl.store(m_ptr + part, m_i, mask=g_mask)
    tl.store(l_ptr + part, l_i, mask=g_mask)
    tl.store(acc_ptr + part[:, None] * DV + offs_dv[None, :], acc, mask=g_mask[:, None] & dv_mask[None, :])


def gqa_decode_triton(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, scale: float,
) -> torch.Tensor:
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    dv = v_cache.shape[-1]
    group = num_heads // num_kv_heads
    q = q.contiguous() if q.stride(-1) != 1 else q
    width = block_tables.shape[1]
    num_splits = choose_num_splits(batch, num_kv_heads, width)
    m, l, acc = partial_buffers(batch, num_heads, num_splits, dv, q.device)
    _gqa_partial_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, m, l, acc, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        num_heads, num_splits,
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), D=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim), DV=dv, BLOCK_DV=triton.next_power_of_2(dv),
        BLOCK_SIZE=block_size, PRECISION=dot_precision(q.dtype), num_warps=4,
    )
    out = torch.empty(batch, num_heads, dv, dtype=q.dtype, device=q.device)
    return combine_splits(m, l, acc, out)
