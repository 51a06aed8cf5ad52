"""Varlen paged attention for grouped-query heads (Llama / Qwen2): any step in one launch.

Contract: `gqa_varlen_triton(q (T, H, D), k_cache (N, bs, Hkv, D), v_cache (N, bs, Hkv, Dv),
block_tables (B, W) int32, seq_lens (B,) int32, query_start_loc (B + 1,) int32, scale,
max_query_len) -> (T, H, Dv)` equals `attention.reference.paged_attention`: sequence i's query rows
query_start_loc[i]:query_start_loc[i + 1] sit at positions seq_len - q_len .. seq_len - 1 and
attend causally over its paged K/V (the layer has already written the step's rows to the cache).
Prefill chunks, chunked prefill over cached context and decode rows (q_len 1) mix freely; the
block size may be any power of two. A sequence with seq len 0 (padding) gives zeros.

Design (vLLM's "unified attention" / context_attention_fwd pattern):
- A program owns one *tile* of BLOCK_Q consecutive queries of one sequence, for all GROUP query
  heads of one kv head: its BLOCK_M = BLOCK_Q x GROUP rows (row r = query r // GROUP, head
  r % GROUP) share every K/V tile it loads, so GQA reads K/V once per group, and the two products
  are BLOCK_M-row `tl.dot`s on tensor cores.
- Tiles are numbered without a host sync: sequence i's tiles start at query_start_loc[i] //
  BLOCK_Q + i, which leaves room for its cdiv(q_len, BLOCK_Q) tiles; the grid has T // BLOCK_Q +
  B tiles, a program finds its sequence by binary search over query_start_loc and returns at once
  if its tile is one of the few spare ones.
- It walks the keys in BLOCK_N-row tiles up to the causal limit of its last query, looking up each
  key's cache block in the block table (so BLOCK_N need not equal the cache block size), with an
  online softmax in float32 (exp2, the scale folded with log2 e).
Decode rows take a whole tile for one query (BLOCK_M rows, GROUP of them useful); that wastes
tensor-core work, not memory traffic, which is what a decode row costs.
8-bit caches (`kv_quant.QuantizedCache`, KV_8BIT): K/V codes are loaded as such, converted to q's dtype
(exact), and each key's K scale multiplies its score column, its V scale its softmax weight, as in the
split-K decode kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.engine.kernels.split_k import dot_precision
from lab.engine.kv_quant import QuantizedCache, kernel_operands

LOG2_E = 1.4426950408889634
MAX_BLOCK_M = 64  # rows per program for prefill tiles: 64 x 128 float32 accumulator fits 4 warps' registers
MIN_BLOCK_M = 16  # tl.dot's smallest tile


@triton.jit
def _find_sequence(qsl_ptr, tile, num_seqs, BLOCK_Q: tl.constexpr):
    """The last sequence i whose first tile, query_start_loc[i] // BLOCK_Q + i, is <= tile."""
    lo: tl.int32 = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first_tile = tl.load(qsl_ptr + mid) // BLOCK_Q + mid
        if first_tile <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _varlen_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, table_ptr, seq_lens_ptr, qsl_ptr, scale_log2,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_kn, stride_kt, stride_kh, stride_vn, stride_vt, stride_vh, stride_tb, num_seqs,
    ks_ptr, vs_ptr, stride_ksn, stride_kst, stride_vsn, stride_vst,  # (N, bs, Hkv, 1) scales when KV_8BIT
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    D: tl.constexpr, BLOCK_D: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, PRECISION: tl.constexpr, KV_8BIT: tl.constexpr,
):
    tile = tl.num_programs(0) - 1 - tl.program_id(0)  # last tiles first: a chunk's last tiles see the most keys
    kvh = tl.program_id(1)
    seq = _find_sequence(qsl_ptr, tile, num_seqs, BLOCK_Q)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    first_query = (tile - (q_start // BLOCK_Q + seq)) * BLOCK_Q  # within the sequence's span
    if first_query >= q_len:
        return  # a spare tile
    seq_len = tl.load(seq_lens_ptr + seq)
    context = seq_len - q_len  # keys before the step's first query
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_mask = offs_d < D
    dv_mask = offs_dv < DV
    q_idx = first_query + offs_m // GROUP  # (BLOCK_M,) query of each row, within the sequence
    heads = kvh * GROUP + offs_m % GROUP  # its query head
    row_mask = (offs_m < BLOCK_Q * GROUP) & (q_idx < q_len)
    q_pos = context + q_idx  # its position: it sees keys at positions <= q_pos
    rows = (q_start + q_idx).to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=row_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    kv_end = tl.minimum(context + first_query + BLOCK_Q, seq_len)  # the tile's last query sees keys < kv_end
    table_row = table_ptr + seq.to(tl.int64) * stride_tb
    for start in range(0, kv_end, BLOCK_N):
        pos = start + offs_n  # (BLOCK_N,) key positions
        n_mask = pos < kv_end
        block_id = tl.load(table_row + pos // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        in_block = pos % BLOCK_SIZE
        k_off = block_id * stride_kn + in_block * stride_kt + kvh * stride_kh
        k = tl.load(k_ptr + k_off[None, :] + offs_d[:, None],
                    mask=n_mask[None, :] & d_mask[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
        if KV_8BIT:  # codes in q's dtype (exact); the key's scale multiplies its score column
            k_scale = tl.load(ks_ptr + block_id * stride_ksn + in_block * stride_kst + kvh, mask=n_mask, other=0.0)
            s = tl.dot(q, k.to(q.dtype), input_precision=PRECISION) * (k_scale[None, :] * scale_log2)
        else:
            s = tl.dot(q, k, input_precision=PRECISION) * scale_log2  # (BLOCK_M, BLOCK_N), log2 units
        # every row sees key 0 in the first tile, so m_i is finite from then on: no NaN from -inf - -inf
        s = tl.where((pos[None, :] <= q_pos[:, None]) & n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_off = block_id * stride_vn + in_block * stride_vt + kvh * stride_vh
        v = tl.load(v_ptr + v_off[:, None] + offs_dv[None, :],
                    mask=n_mask[:, None] & dv_mask[None, :], other=0.0)  # (BLOCK_N, BLOCK_DV)
        if KV_8BIT:  # the value's scale multiplies its softmax weight
            v_scale = tl.load(vs_ptr + block_id * stride_vsn + in_block * stride_vst + kvh, mask=n_mask, other=0.0)
            acc = acc * alpha[:, None] + tl.dot((p * v_scale[None, :]).to(q.dtype), v.to(q.dtype),
                                                input_precision=PRECISION)
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # a row with no keys (seq len 0 padding) gives zeros
    tl.store(out_ptr + rows[:, None] * stride_ot + heads[:, None] * stride_oh + offs_dv[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & dv_mask[None, :])


def choose_block_m(group: int, max_query_len: int) -> int:
    """Rows per program: enough for the longest query span's heads, between 16 and 64 (or one group)."""
    rows = triton.next_power_of_2(max(group * max_query_len, 1))
    return max(MIN_BLOCK_M, triton.next_power_of_2(group), min(rows, MAX_BLOCK_M))


def gqa_varlen_triton(
    q: torch.Tensor, k_cache: torch.Tensor | QuantizedCache, v_cache: torch.Tensor | QuantizedCache,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_start_loc: torch.Tensor, scale: float, max_query_len: int,
) -> torch.Tensor:
    # 8-bit: codes as the cache, scales (N, bs, Hkv, 1) with the kv head's stride 1; plain: scales never read
    k_cache, v_cache, ks, vs, quantized = kernel_operands(k_cache, v_cache)
    num_tokens, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    dv = v_cache.shape[-1]
    group = num_heads // num_kv_heads
    if block_size & (block_size - 1):
        raise ValueError(f"varlen attention needs a power-of-two block size, got {block_size}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty(num_tokens, num_heads, dv, dtype=q.dtype, device=q.device)
    if num_tokens == 0:
        return out
    block_m = choose_block_m(group, max_query_len)
    block_q = block_m // group
    num_seqs = seq_lens.shape[0]
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_n = 64 if block_d <= 128 else 32
    grid = (num_tokens // block_q + num_seqs, num_kv_heads)
    _varlen_kernel[grid](
        q, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc, scale * LOG2_E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), num_seqs,
        ks, vs, *((ks.stride(0), ks.stride(1), vs.stride(0), vs.stride(1)) if quantized else (0, 0, 0, 0)),
        GROUP=group, BLOCK_M=block_m, BLOCK_Q=block_q, BLOCK_N=block_n,
        D=head_dim, BLOCK_D=block_d, DV=dv, BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        BLOCK_SIZE=block_size, PRECISION=dot_precision(q.dtype), KV_8BIT=quantized, num_warps=4,
    )
    return out
