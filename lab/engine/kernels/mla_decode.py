"""Paged decode attention over MLA latents with absorbed weights, split-K, one query per sequence.

Contract: `mla_decode_triton(q (B, H, R + rope), cache (N, bs, R + rope), block_tables (B, W) int32,
seq_lens (B,) int32, rank R, scale, config=MLA_DECODE) -> (B, H, R)` equals
`attention.decode.mla_decode_attention_torch`. The query is already absorbed (q_nope @ W_UK lives
in latent space), so
    score(h, t) = (q_nope_absorbed[h] . c_kv[t] + q_pe[h] . k_pe[t]) * scale
and the output is sum_t p(h, t) c_kv[t], still in latent space (the caller applies W_UV). Every
head shares one cache row per token, so a program takes 16 heads at once and reads each latent
tile once for all of them: MLA decode reads R + rope elements per token, not H x (D + Dv).
R and rope must be powers of two (512 and 64 for DeepSeek-V2/V3).
Why tiles of several pages: each iteration gathers `pages_per_tile` pages (one memory round trip,
see split_k's docstring); a split's partial acc (16 x 512 float32, 32 KB) outweighs a page of
latents (18 KB), hence several pages per split. The defaults (MLA_DECODE) are measured, not derived.
8-bit caches (`kv_quant.QuantizedCache`, parts (R, rope), KV_8BIT): the row's codes are loaded as such (half
the bytes), converted to q's dtype, and the c_kv and k_pe scales of each token are folded into its score
column (each into its own product) and its softmax weight (the values are c_kv).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.split_k import (
    DecodeConfig, combine_splits, dot_precision, grid_splits, online_softmax_update, online_softmax_update_scaled,
    partial_buffers, split_page_range, store_partial, tile_block_ids,
)
from lab.engine.kv_quant import QuantizedCache

BLOCK_H = 16  # heads per program: tl.dot's minimum tile
# scratch/bench_decode_attention.py on an NVIDIA H200 (V2-Lite 16 heads, rank 512 + rope 64, block 16,
# us per call vs HEAD's kernels): the best geometric mean over batch 1/8/32 x context 512/2048, 1.27x:
# b1/512 7.8 vs 8.54, b1/2048 8.96 vs 22.83, b8/512 10.71 vs 10.88, b8/2048 19.44 vs 24.47,
# b32/512 26.44 vs 24.83, b32/2048 53.28 vs 65.3.
MLA_DECODE = DecodeConfig(pages_per_tile=4, max_tile_tokens=64, min_pages_per_split=4, max_splits=32,
                          num_warps=8, num_stages=2)


@triton.jit(do_not_specialize=["num_splits", "min_pages"])  # shape knobs: one compile per tile size
def _mla_partial_kernel(
    q_ptr, cache_ptr, table_ptr, seq_lens_ptr, m_ptr, l_ptr, acc_ptr, scale,
    stride_qb, stride_qh, stride_cn, stride_ct, stride_tb, num_heads, num_splits, min_pages,
    scale_ptr, stride_sn, stride_st,  # (N, bs, 2) scales [c_kv, k_pe] when KV_8BIT
    RANK: tl.constexpr, ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    PAGES_PER_TILE: tl.constexpr, PRECISION: tl.constexpr, KV_8BIT: tl.constexpr,
):
    b = tl.program_id(0)
    hb = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + b)
    heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    h_mask = heads < num_heads
    offs_r = tl.arange(0, RANK)
    offs_p = tl.arange(0, ROPE)
    offs_t = tl.arange(0, PAGES_PER_TILE * BLOCK_SIZE)  # the tile's tokens, page after page
    offs_in = offs_t % BLOCK_SIZE  # row of each token within its page
    first, last = split_page_range(seq_len, split, num_splits, min_pages, BLOCK_SIZE)
    end = tl.minimum(last * BLOCK_SIZE, seq_len)  # one past this split's last token
    table_row = table_ptr + b * stride_tb
    ids, t_mask = tile_block_ids(table_row, first, end, offs_t, BLOCK_SIZE)  # issued before q's load returns
    q_row = q_ptr + b * stride_qb + heads[:, None] * stride_qh
    q_nope = tl.load(q_row + offs_r[None, :], mask=h_mask[:, None], other=0.0)  # (BLOCK_H, R)
    q_pe = tl.load(q_row + RANK + offs_p[None, :], mask=h_mask[:, None], other=0.0)  # (BLOCK_H, rope)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, RANK], tl.float32)
    for p0 in range(first, last, PAGES_PER_TILE):
        rows = cache_ptr + ids[:, None] * stride_cn + offs_in[:, None] * stride_ct
        c = tl.load(rows + offs_r[None, :], mask=t_mask[:, None], other=0.0)  # (BLOCK_T, R): c_kv
        pe = tl.load(rows + RANK + offs_p[None, :], mask=t_mask[:, None], other=0.0)  # (BLOCK_T, rope): k_pe
        # the next tile's block ids (all masked past the split) while this tile's latents arrive
        next_ids, next_mask = tile_block_ids(table_row, p0 + PAGES_PER_TILE, end, offs_t, BLOCK_SIZE)
        if KV_8BIT:
            scales = scale_ptr + ids * stride_sn + offs_in * stride_st
            c_scale = tl.load(scales, mask=t_mask, other=0.0)  # (BLOCK_T,)
            pe_scale = tl.load(scales + 1, mask=t_mask, other=0.0)
            c = c.to(q_nope.dtype)
            s = tl.dot(q_nope, tl.trans(c), input_precision=PRECISION) * c_scale[None, :]
            s = (s + tl.dot(q_pe, tl.trans(pe.to(q_pe.dtype)), input_precision=PRECISION) * pe_scale[None, :]) * scale
            m_i, l_i, acc = online_softmax_update_scaled(s, t_mask, m_i, l_i, acc, c, c_scale, PRECISION)
        else:
            s = tl.dot(q_nope, tl.trans(c), input_precision=PRECISION)  # (BLOCK_H, BLOCK_T): latent part
            s = (s + tl.dot(q_pe, tl.trans(pe), input_precision=PRECISION)) * scale  # + rope part
            m_i, l_i, acc = online_softmax_update(s, t_mask, m_i, l_i, acc, c, PRECISION)  # values: the latents themselves
        ids, t_mask = next_ids, next_mask
    part = (b * num_heads + heads) * num_splits + split
    store_partial(m_ptr, l_ptr, acc_ptr, part, h_mask, offs_r, offs_r < RANK, m_i, l_i, acc, first < last, RANK)


def mla_decode_triton(
    q: torch.Tensor, cache: torch.Tensor | QuantizedCache, block_tables: torch.Tensor, seq_lens: torch.Tensor, rank: int,
    scale: float, config: DecodeConfig = MLA_DECODE,
) -> torch.Tensor:
    batch, num_heads, width_q = q.shape
    rope = width_q - rank
    if rank & (rank - 1) or rope & (rope - 1):
        raise ValueError(f"MLA Triton decode needs power-of-two kv_lora_rank and rope dims, got {rank} and {rope}")
    quantized = isinstance(cache, QuantizedCache)
    if quantized and cache.groups != (rank, rope):
        raise ValueError(f"MLA Triton decode needs an 8-bit cache scaled in parts ({rank}, {rope}), got {cache.groups}")
    scales = cache.scale if quantized else None
    cache = cache.data if quantized else cache
    block_size = cache.shape[1]
    q = q.contiguous()
    head_blocks = triton.cdiv(num_heads, BLOCK_H)
    num_splits = grid_splits(batch, head_blocks, config)
    m, l, acc = partial_buffers(batch, num_heads, num_splits, rank, q.device)
    out = torch.empty(batch, num_heads, rank, dtype=q.dtype, device=q.device)
    _mla_partial_kernel[(batch, head_blocks, num_splits)](
        q, cache, block_tables, seq_lens, m, l, acc, scale,
        q.stride(0), q.stride(1), cache.stride(0), cache.stride(1), block_tables.stride(0), num_heads, num_splits,
        config.min_pages_per_split, scales if quantized else cache,
        *((scales.stride(0), scales.stride(1)) if quantized else (0, 0)), KV_8BIT=quantized,
        RANK=rank, ROPE=rope, BLOCK_H=BLOCK_H, BLOCK_SIZE=block_size,
        PAGES_PER_TILE=config.tile_pages(block_size), PRECISION=dot_precision(q.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return combine_splits(m, l, acc, out, config.combine_block_dv)
