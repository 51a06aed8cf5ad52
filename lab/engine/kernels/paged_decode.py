"""Paged decode attention for grouped-query heads (Llama / Qwen2), split-K, one query per sequence.

Contract: `gqa_decode_triton(q (B, H, D), k_cache (N, bs, Hkv, D), v_cache (N, bs, Hkv, Dv),
block_tables (B, W) int32, seq_lens (B,) int32, scale, config=GQA_DECODE) -> (B, H, Dv)` equals
`attention.decode.gqa_decode_attention_torch` (a seq len of 0 gives zeros). Program (b, kv head,
split) loads the K/V of its kv head once for all G query heads of the group (the point of GQA:
K/V are read once per group, not per head), keeps an online softmax in float32, and writes its
partial state; `split_k.combine_splits` merges the splits. The group is padded to 16 rows so the
two products run on tensor cores (`tl.dot` needs 16 x 16 tiles).
Why tiles of several pages: at small batch the kernel is latency-bound, so each iteration gathers
`pages_per_tile` pages (their block ids in one vector load, the next tile's ids fetched while this
tile computes) and pays one memory round trip for all of them (see split_k's docstring).
8-bit caches (`kv_quant.QuantizedCache`, KV_8BIT): K and V codes are loaded as such (half the bytes),
converted to q's dtype (exact for e4m3 and int8) and each key's scale is folded into its score column and
its softmax weight, so the products stay tensor-core dots and no dequantized tile is materialized.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.split_k import (
    DecodeConfig, combine_splits, dot_precision, grid_splits, online_softmax_update, online_softmax_update_scaled,
    partial_buffers, split_page_range, store_partial, tile_block_ids,
)
from lab.engine.kv_quant import QuantizedCache, kernel_operands

# scratch/bench_decode_attention.py on an NVIDIA H200 (Qwen 12/2 heads x 128, block 16, us per call
# vs HEAD's kernels): the best geometric mean over batch 1/8/32 x context 512/2048, 1.26x:
# b1/512 5.15 vs 5.11, b1/2048 6.93 vs 13.13, b8/512 7.37 vs 7.67, b8/2048 10.96 vs 15.44,
# b32/512 11.19 vs 12.69, b32/2048 25.24 vs 32.5.
GQA_DECODE = DecodeConfig(pages_per_tile=2, max_tile_tokens=32, min_pages_per_split=2, max_splits=64,
                          num_warps=4, num_stages=2)


@triton.jit(do_not_specialize=["num_splits", "min_pages"])  # shape knobs: one compile per tile size
def _gqa_partial_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, seq_lens_ptr, m_ptr, l_ptr, acc_ptr, scale,
    stride_qb, stride_qh, stride_kn, stride_kt, stride_kh, stride_vn, stride_vt, stride_vh, stride_tb,
    num_heads, num_splits, min_pages,
    ks_ptr, vs_ptr, stride_ksn, stride_kst, stride_vsn, stride_vst,  # (N, bs, Hkv, 1) scales when KV_8BIT
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
    DV: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_SIZE: tl.constexpr, PAGES_PER_TILE: tl.constexpr,
    PRECISION: tl.constexpr, KV_8BIT: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + b)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_t = tl.arange(0, PAGES_PER_TILE * BLOCK_SIZE)  # the tile's tokens, page after page
    offs_in = offs_t % BLOCK_SIZE  # row of each token within its page
    g_mask = offs_g < GROUP
    d_mask = offs_d < D
    dv_mask = offs_dv < DV
    heads = kvh * GROUP + offs_g  # query heads of this kv head
    first, last = split_page_range(seq_len, split, num_splits, min_pages, BLOCK_SIZE)
    end = tl.minimum(last * BLOCK_SIZE, seq_len)  # one past this split's last token
    table_row = table_ptr + b * stride_tb
    ids, t_mask = tile_block_ids(table_row, first, end, offs_t, BLOCK_SIZE)  # issued before q's load returns
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_G, BLOCK_D)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], tl.float32)
    for p0 in range(first, last, PAGES_PER_TILE):
        k = tl.load(k_ptr + ids[:, None] * stride_kn + offs_in[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=t_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_T, BLOCK_D)
        v = tl.load(v_ptr + ids[:, None] * stride_vn + offs_in[:, None] * stride_vt + kvh * stride_vh + offs_dv[None, :],
                    mask=t_mask[:, None] & dv_mask[None, :], other=0.0)  # (BLOCK_T, BLOCK_DV): in flight with K
        # the next tile's block ids (all masked past the split) while this tile's K/V arrive
        next_ids, next_mask = tile_block_ids(table_row, p0 + PAGES_PER_TILE, end, offs_t, BLOCK_SIZE)
        if KV_8BIT:
            k_scale = tl.load(ks_ptr + ids * stride_ksn + offs_in * stride_kst + kvh, mask=t_mask, other=0.0)
            v_scale = tl.load(vs_ptr + ids * stride_vsn + offs_in * stride_vst + kvh, mask=t_mask, other=0.0)
            s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION) * (k_scale[None, :] * scale)
            m_i, l_i, acc = online_softmax_update_scaled(s, t_mask, m_i, l_i, acc, v.to(q.dtype), v_scale, PRECISION)
        else:
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_G, BLOCK_T) float32
            m_i, l_i, acc = online_softmax_update(s, t_mask, m_i, l_i, acc, v, PRECISION)
        ids, t_mask = next_ids, next_mask
    part = (b * num_heads + heads) * num_splits + split  # (BLOCK_G,) rows of the (B, H, S) partials
    store_partial(m_ptr, l_ptr, acc_ptr, part, g_mask, offs_dv, dv_mask, m_i, l_i, acc, first < last, DV)


def gqa_decode_triton(
    q: torch.Tensor, k_cache: torch.Tensor | QuantizedCache, v_cache: torch.Tensor | QuantizedCache,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float, config: DecodeConfig = GQA_DECODE,
) -> torch.Tensor:
    # 8-bit: codes as the cache, scales (N, bs, Hkv, 1) with the kv head's stride 1; plain: scales never read
    k_cache, v_cache, ks, vs, quantized = kernel_operands(k_cache, v_cache)
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    dv = v_cache.shape[-1]
    group = num_heads // num_kv_heads
    q = q.contiguous() if q.stride(-1) != 1 else q
    num_splits = grid_splits(batch, num_kv_heads, config)
    m, l, acc = partial_buffers(batch, num_heads, num_splits, dv, q.device)
    out = torch.empty(batch, num_heads, dv, dtype=q.dtype, device=q.device)
    _gqa_partial_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, m, l, acc, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        num_heads, num_splits, config.min_pages_per_split,
        ks, vs, *((ks.stride(0), ks.stride(1), vs.stride(0), vs.stride(1)) if quantized else (0, 0, 0, 0)),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), D=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim), DV=dv, BLOCK_DV=triton.next_power_of_2(dv),
        BLOCK_SIZE=block_size, PAGES_PER_TILE=config.tile_pages(block_size),
        PRECISION=dot_precision(q.dtype), KV_8BIT=quantized, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return combine_splits(m, l, acc, out, config.combine_block_dv)
