"""Split-K ("flash decoding") bookkeeping shared by the decode kernels.

Contract: at batch 1 a decode step has only B x heads independent softmaxes, far fewer than the
GPU's SMs, so each sequence's context is cut into up to `num_splits` page ranges that run as
separate programs. Each writes its partial state: running max m, sum of exp l, and unnormalized
output acc. `combine_splits` merges them: out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s.
A split with no keys writes m = -inf, l = 0 and no acc (the combine never reads acc where m = -inf);
a sequence with no keys gives 0. `online_softmax_update` is the per-tile update of that state.

Why the knobs (`DecodeConfig`): small-batch decode is latency-bound, not bandwidth-bound. Each
loop iteration of a split is a chain of dependent memory round trips (block ids -> K -> dot -> V),
so a program walks `pages_per_tile` pages per iteration (one round trip for all of them), and the
split count goes up to `max_splits` so more SMs share a short context. `min_pages_per_split` stops
splits from getting so short that writing the partial state costs more than reading the keys
(MLA: a 16 x 512 float32 acc per split is 32 KB, a 16-token latent page 18 KB).
The grid depends on shapes only (CUDA graphs); how many splits a sequence actually uses is decided
in the kernel from its own length, so unused split programs just write m = -inf and exit.
A variant where the last split program merged the partials itself (atomic arrival counter, no
combine launch) was measured slower on an H200 (8.2 vs 5.0 us at batch 1, 512 tokens) and removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

TARGET_PROGRAMS = 512  # about 4 programs per SM on an H100 (132 SMs)
MAX_SPLITS = 64


@dataclass(frozen=True)
class DecodeConfig:
    """Launch knobs of one split-K decode kernel; the GPU bench sweeps them (scratch/bench_decode_attention.py)."""

    pages_per_tile: int  # cache pages gathered per loop iteration (power of two)
    max_tile_tokens: int = 128  # caps pages_per_tile for large block sizes (registers grow with the tile)
    min_pages_per_split: int = 1  # a sequence gets at most cdiv(pages, this) splits
    max_splits: int = MAX_SPLITS
    target_programs: int = TARGET_PROGRAMS  # splits are added until batch x head programs x splits reaches this
    num_warps: int = 4
    num_stages: int = 2
    combine_block_dv: int = 128  # output columns per combine program (more programs for wide MLA rows)

    def __post_init__(self) -> None:
        if self.pages_per_tile < 1 or self.pages_per_tile & (self.pages_per_tile - 1):
            raise ValueError(f"pages_per_tile must be a power of two, got {self.pages_per_tile}")
        if self.min_pages_per_split < 1 or self.max_splits < 1:
            raise ValueError(f"min_pages_per_split and max_splits must be >= 1: {self}")

    def tile_pages(self, block_size: int) -> int:
        """PAGES_PER_TILE for this block size: pages_per_tile, fewer if the tile would pass max_tile_tokens."""
        fit = max(1, self.max_tile_tokens // block_size)
        return min(self.pages_per_tile, 1 << (fit.bit_length() - 1))  # a power of two: tl.arange needs one


def grid_splits(batch: int, heads_programs: int, config: DecodeConfig) -> int:
    """The split dimension of a decode grid, from the batch and head programs only. Not from the block
    table's width: an eager step's table is as wide as its longest sequence, a CUDA graph's as the
    context limit, and the same split count in both gives a graph replay the eager step's sums, bit for
    bit (a split the sequence cannot fill exits at once)."""
    want = triton.cdiv(config.target_programs, max(batch * heads_programs, 1))  # fill the GPU
    return max(1, min(want, config.max_splits))


@triton.jit
def split_page_range(seq_len, split, num_splits, min_pages, BLOCK_SIZE: tl.constexpr):
    """[first, last) pages of this split, from the sequence's own length (not the table width); the
    splits past the sequence's pages get an empty range."""
    num_pages = tl.cdiv(seq_len, BLOCK_SIZE)
    pages_per_split = tl.maximum(tl.cdiv(num_pages, num_splits), min_pages)
    first = split * pages_per_split
    last = tl.minimum(first + pages_per_split, num_pages)
    return first, last


@triton.jit
def tile_block_ids(table_row_ptr, p0, end, offs_t, BLOCK_SIZE: tl.constexpr):
    """Cache block of each token of the tile starting at page p0: one vector load for all its pages.

    Returns (block ids int64, which tokens exist); tokens at positions >= end (past the split or
    the sequence) are masked and get block 0, never read. Token t sits at row t % BLOCK_SIZE.
    """
    t_mask = p0 * BLOCK_SIZE + offs_t < end
    ids = tl.load(table_row_ptr + p0 + offs_t // BLOCK_SIZE, mask=t_mask, other=0).to(tl.int64)
    return ids, t_mask


@triton.jit(do_not_specialize=["num_splits"])
def _combine_kernel(
    m_ptr, l_ptr, acc_ptr, out_ptr,  # m, l: (B, H, S) f32; acc: (B, H, S, DV) f32; out: (B, H, DV)
    stride_ob, stride_oh, num_heads, num_splits,
    BLOCK_S: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.program_id(2) * BLOCK_DV + tl.arange(0, BLOCK_DV)
    s_mask = offs_s < num_splits
    d_mask = offs_d < DV
    base = (b * num_heads + h) * num_splits
    m = tl.load(m_ptr + base + offs_s, mask=s_mask, other=float("-inf"))
    l = tl.load(l_ptr + base + offs_s, mask=s_mask, other=0.0)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # no keys at all: every weight is exp(-inf) = 0
    w = tl.exp(m - m_max)  # (S,)
    denom = tl.sum(w * l, 0)
    has_keys = s_mask & (m > float("-inf"))  # empty splits never wrote acc: skip the read (and its garbage)
    acc = tl.load(acc_ptr + (base + offs_s[:, None]) * DV + offs_d[None, :], mask=has_keys[:, None] & d_mask[None, :], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def online_softmax_update(s, t_mask, m_i, l_i, acc, v, PRECISION: tl.constexpr):
    """One key tile of a split's online softmax, the loop body both decode kernels share.

    s (ROWS, BLOCK_T) float32 scaled scores, t_mask (BLOCK_T,) which keys exist, v (BLOCK_T, DV)
    the tile's values; (m_i, l_i, acc) the running max, sum of exp and unnormalized output,
    returned updated. Inlined by Triton: the same instructions as the loop bodies it replaced.
    """
    s = tl.where(t_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def online_softmax_update_scaled(s, t_mask, m_i, l_i, acc, v, v_scale, PRECISION: tl.constexpr):
    """`online_softmax_update` for 8-bit values: v (BLOCK_T, DV) holds codes (already in the query's dtype),
    v_scale (BLOCK_T,) each key's scale. The scale is folded into the softmax weights before the product,
    sum_t p_t (v_t s_t) = sum_t (p_t s_t) v_t: one multiply per key, not per value element."""
    s = tl.where(t_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot((p * v_scale[None, :]).to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def store_partial(m_ptr, l_ptr, acc_ptr, part, row_mask, offs_dv, dv_mask, m_i, l_i, acc, has_keys, DV: tl.constexpr):
    """Write one split's (m, l, acc) rows; acc only when the split saw keys (the combine skips the rest)."""
    tl.store(m_ptr + part, m_i, mask=row_mask)
    tl.store(l_ptr + part, l_i, mask=row_mask)
    if has_keys:  # a branch, not a mask term: Triton 3.9's interpreter rejects a block mask and-ed with a scalar
        tl.store(acc_ptr + part[:, None] * DV + offs_dv[None, :], acc, mask=row_mask[:, None] & dv_mask[None, :])


def dot_precision(dtype: torch.dtype) -> str:
    """float32 caches keep full precision (the oracle tests); tf32 would round scores to 10 bits."""
    return "ieee" if dtype == torch.float32 else "tf32"


def partial_buffers(batch: int, heads: int, num_splits: int, dv: int, device: torch.device):
    """(m, l, acc) float32 scratch for the split-K partial states."""
    m = torch.empty(batch, heads, num_splits, dtype=torch.float32, device=device)
    l = torch.empty_like(m)
    acc = torch.empty(batch, heads, num_splits, dv, dtype=torch.float32, device=device)
    return m, l, acc


def combine_splits(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, out: torch.Tensor, block_dv: int = 128) -> torch.Tensor:
    batch, heads, num_splits, dv = acc.shape
    block_dv = min(triton.next_power_of_2(dv), block_dv)
    _combine_kernel[(batch, heads, triton.cdiv(dv, block_dv))](
        m, l, acc, out, out.stride(0), out.stride(1), heads, num_splits,
        BLOCK_S=max(16, triton.next_power_of_2(num_splits)),  # a few compiles (powers of two), no wasted lanes
        DV=dv, BLOCK_DV=block_dv,
    )
    return out
