"""Paged decode attention over MLA latents with absorbed weights, split-K, one query per sequence.

Contract: `mla_decode_triton(q (B, H, R + rope), cache (N, bs, R + rope), block_tables (B, W) int32,
seq_lens (B,) int32, rank R, scale) -> (B, H, R)` equals `decode_attention.mla_decode_attention_torch`.
The query is already absorbed (q_nope @ W_UK lives in latent space), so
    score(h, t) = (q_nope_absorbed[h] . c_kv[t] + q_pe[h] . k_pe[t]) * scale
and the output is sum_t p(h, t) c_kv[t], still in latent space (the caller applies W_UV). Every
head shares one cache row per token, so a program takes 16 heads at once and reads each latent
block once for all of them: MLA decode reads R + rope elements per token, not H x (D + Dv).
R and rope must be powers of two (512 and 64 for DeepSeek-V2/V3).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.split_k import (
    choose_num_splits, combine_splits, dot_precision, online_softmax_update, partial_buffers,
)

BLOCK_H = 16  # heads per program: tl.dot's minimum tile


@triton.jit
def _mla_partial_kernel(
    q_ptr, cache_ptr, table_ptr, seq_lens_ptr, m_ptr, l_ptr, acc_ptr, scale,
    stride_qb, stride_qh, stride_cn, stride_ct, stride_tb, num_heads, num_splits,
    RANK: tl.constexpr, ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    hb = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + b)
    heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    h_mask = heads < num_heads
    offs_r = tl.arange(0, RANK)
    offs_p = tl.arange(0, ROPE)
    offs_t = tl.arange(0, BLOCK_SIZE)
    q_row = q_ptr + b * stride_qb + heads[:, None] * stride_qh
    q_nope = tl.load(q_row + offs_r[None, :], mask=h_mask[:, None], other=0.0)  # (BLOCK_H, R)
    q_pe = tl.load(q_row + RANK + offs_p[None, :], mask=h_mask[:, None], other=0.0)  # (BLOCK_H, rope)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, RANK], tl.float32)
    num_blocks = tl.cdiv(seq_len, BLOCK_SIZE)
    blocks_per_split = tl.cdiv(num_blocks, num_splits)  # from this sequence's own length, not the table width
    first = split * blocks_per_split
    last = tl.minimum(first + blocks_per_split, num_blocks)
    for blk in range(first, last):
        block_id = tl.load(table_ptr + b * stride_tb + blk).to(tl.int64)
        pos = blk * BLOCK_SIZE + offs_t
        t_mask = pos < seq_len
        rows = cache_ptr + block_id * stride_cn + offs_t[:, None] * stride_ct
        c = tl.load(rows + offs_r[None, :], mask=t_mask[:, None], other=0.0)  # (BLOCK_SIZE, R): c_kv
        pe = tl.load(rows + RANK + offs_p[None, :], mask=t_mask[:, None], other=0.0)  # (BLOCK_SIZE, rope): k_pe
        s = tl.dot(q_nope, tl.trans(c), input_precision=PRECISION)  # (BLOCK_H, BLOCK_SIZE): latent part
        s = (s + tl.dot(q_pe, tl.trans(pe), input_precision=PRECISION)) * scale  # + rope part
        m_i, l_i, acc = online_softmax_update(s, t_mask, m_i, l_i, acc, c, PRECISION)  # values: the latents themselves
    part = (b * num_heads + heads) * num_splits + split
    tl.store(m_ptr + part, m_i, mask=h_mask)
    tl.store(l_ptr + part, l_i, mask=h_mask)
    tl.store(acc_ptr + part[:, None] * RANK + offs_r[None, :], acc, mask=h_mask[:, None])


def mla_decode_triton(
    q: torch.Tensor, cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor, rank: int, scale: float
) -> torch.Tensor:
    batch, num_heads, width_q = q.shape
    rope = width_q - rank
    if rank & (rank - 1) or rope & (rope - 1):
        raise ValueError(f"MLA Triton decode needs power-of-two kv_lora_rank and rope dims, got {rank} and {rope}")
    block_size = cache.shape[1]
    q = q.contiguous()
    head_blocks = triton.cdiv(num_heads, BLOCK_H)
    width = block_tables.shape[1]
    num_splits = choose_num_splits(batch, head_blocks, width)
    m, l, acc = partial_buffers(batch, num_heads, num_splits, rank, q.device)
    _mla_partial_kernel[(batch, head_blocks, num_splits)](
        q, cache, block_tables, seq_lens, m, l, acc, scale,
        q.stride(0), q.stride(1), cache.stride(0), cache.stride(1), block_tables.stride(0), num_heads, num_splits,
        RANK=rank, ROPE=rope, BLOCK_H=BLOCK_H, BLOCK_SIZE=block_size, PRECISION=dot_precision(q.dtype), num_warps=8,
    )
    out = torch.empty(batch, num_heads, rank, dtype=q.dtype, device=q.device)
    return combine_splits(m, l, acc, out)
