"""Triton attention kernels vs the per-sequence oracles, through Triton's CPU interpreter (float32).

The varlen GQA kernel runs mixed steps (decode rows, prefill from position 0, chunks over cached
context, contexts over several shuffled blocks, several block sizes) against
`attention.reference.paged_attention`; the split-K decode kernels run against the vectorized torch decode,
padding rows (seq len 0) included, under several `DecodeConfig`s (tiles of several pages that
straddle split and sequence ends, split caps, minimum pages per split);
one-layer models run a mixed step on the "triton" backend (MLA: absorbed decode kernel for the
decode row + SDPA per chunk; GQA: the varlen kernel) against the "reference" backend. On a GPU the same tests run the compiled kernels.
"""
from __future__ import annotations

from tests.engine.triton_interpret import DEVICE, ON_GPU  # first: sets TRITON_INTERPRET=1 without CUDA
from tests.engine.triton_interpret import interpreter_scalar_index  # noqa: F401  (autouse in this module)

import dataclasses

import pytest
import torch

from lab.engine.attention.reference import paged_attention
from lab.engine.attention.decode import gqa_decode_attention_torch, mla_decode_attention_torch
from tests.engine.paged_fixtures import SMALL_QWEN, model_step_outputs, random_caches, random_decode_meta, random_step_meta

NUM_BLOCKS = 48
# Small blocks keep the interpreter fast; compiled decode kernels need >= 16 (tl.dot's K over a block).
DECODE_BLOCK = 16 if ON_GPU else 8
TOL = dict(atol=1e-5, rtol=1e-5)


# (query lens, seq lens): decode rows, prefills from 0, chunks over cached context, a lone token
MIXED = ([1, 5, 1, 37, 20, 1, 3], [9, 5, 40, 37, 70, 1, 3])
MANY_SHORT = ([1, 2, 1, 1, 3, 1, 2, 1, 1, 1, 4, 1], [7, 2, 18, 1, 9, 30, 6, 3, 12, 4, 4, 25])


def _varlen(q, k_cache, v_cache, meta, scale):
    from lab.engine.kernels.varlen_attention import gqa_varlen_triton

    return gqa_varlen_triton(q, k_cache, v_cache, meta.block_tables_tensor, meta.seq_lens_tensor,
                             meta.query_start_loc_tensor, scale, meta.max_query_len)


@pytest.mark.parametrize(  # block sizes smaller than, equal to and larger than a key tile
    "heads,kv_heads,dim,block_size", [(4, 4, 16, 16), (6, 2, 32, 4), (6, 2, 32, 16), (8, 1, 64, 128)]
)
def test_varlen_gqa_equals_paged_attention(heads, kv_heads, dim, block_size) -> None:
    query_lens, seq_lens = MIXED
    meta = random_step_meta(query_lens, seq_lens, block_size, NUM_BLOCKS, DEVICE, seed=block_size)
    k, v = random_caches([(kv_heads, dim)] * 2, NUM_BLOCKS, block_size, torch.float32, DEVICE, seed=heads)
    q = torch.randn(sum(query_lens), heads, dim, device=DEVICE)
    want = paged_attention(q, k, v, meta, dim**-0.5)
    torch.testing.assert_close(_varlen(q, k, v, meta, dim**-0.5), want, **TOL)


def test_varlen_gqa_many_short_spans() -> None:
    """Tiles of one or two queries: every program must find its own sequence by binary search."""
    query_lens, seq_lens = MANY_SHORT
    meta = random_step_meta(query_lens, seq_lens, 4, NUM_BLOCKS, DEVICE, seed=5)
    k, v = random_caches([(2, 16)] * 2, NUM_BLOCKS, 4, torch.float32, DEVICE, seed=5)
    q = torch.randn(sum(query_lens), 16, 16, device=DEVICE)  # group 8: tiles of 2 queries
    torch.testing.assert_close(_varlen(q, k, v, meta, 0.3), paged_attention(q, k, v, meta, 0.3), **TOL)


def test_varlen_gqa_strided_query_and_pure_decode() -> None:
    """q as a column slice of a fused qkv output (the model's layout); decode rows only, one of them padding."""
    seq_lens = [3, 17, 40, 5]
    meta = random_step_meta([1, 1, 1, 1], seq_lens, 16, NUM_BLOCKS, DEVICE, seed=2)
    k, v = random_caches([(2, 32)] * 2, NUM_BLOCKS, 16, torch.float32, DEVICE, seed=2)
    qkv = torch.randn(4, 8 * 32, device=DEVICE)
    q = qkv[:, : 4 * 32].view(4, 4, 32)
    want = paged_attention(q, k, v, meta, 0.2)
    meta.seq_lens_tensor[3] = 0  # a padding row of a graph batch: no keys
    got = _varlen(q, k, v, meta, 0.2)
    torch.testing.assert_close(got[:3], want[:3], **TOL)
    assert torch.equal(got[3], torch.zeros_like(got[3]))


def test_gqa_decode_kernel_equals_torch() -> None:
    heads, kv_heads = 8, 2
    from lab.engine.kernels.paged_decode import gqa_decode_triton

    meta = random_decode_meta([1, 7, 16, 33, 50], DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=heads, width=8)  # several splits per row
    meta.seq_lens_tensor[2] = 0  # a padding row of a graph batch
    k, v = random_caches([(kv_heads, 16)] * 2, NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE)
    q = torch.randn(5, heads, 16, device=DEVICE)
    want = gqa_decode_attention_torch(q, k, v, meta, 0.25)
    got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, 0.25)
    torch.testing.assert_close(got, want, **TOL)
    assert torch.equal(got[2], torch.zeros_like(got[2]))


def test_mla_decode_kernel_equals_torch() -> None:
    from lab.engine.kernels.mla_decode import mla_decode_triton

    rank, rope, heads = 32, 16, 4
    meta = random_decode_meta([1, 7, 16, 33, 90], DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=3)  # 90: several splits
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE)
    q = torch.randn(5, heads, rank + rope, device=DEVICE)
    want = mla_decode_attention_torch(q, cache, meta, rank, 0.1)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.1)
    torch.testing.assert_close(got, want, **TOL)


# seq lens: padding (0), a lone token, a page exactly full / one over, a tile that ends mid-page,
# contexts longer than one split's share; blocks shuffled, so every table is non-contiguous
DECODE_LENS = [5, 1, 8, 9, 31, 50, 77, 3]  # row 0 becomes padding (seq len 0) once the tables exist
# (pages_per_tile, min_pages_per_split, max_splits): one page per step as before, tiles larger than
# a split's share, tiles straddling split ends, few splits over long contexts, one split per sequence
DECODE_CONFIGS = [(1, 1, 16), (2, 1, 64), (4, 1, 3), (2, 3, 5), (8, 2, 1)]


def _decode_config(pages_per_tile, min_pages, max_splits, **kw):
    from lab.engine.kernels.split_k import DecodeConfig

    return DecodeConfig(pages_per_tile=pages_per_tile, min_pages_per_split=min_pages, max_splits=max_splits, **kw)


def test_tile_pages_cap_large_blocks() -> None:
    from lab.engine.kernels.split_k import DecodeConfig

    config = DecodeConfig(pages_per_tile=4, max_tile_tokens=64)
    assert [config.tile_pages(bs) for bs in (8, 16, 32, 64, 128)] == [4, 4, 2, 1, 1]
    assert DecodeConfig(pages_per_tile=8, max_tile_tokens=96).tile_pages(16) == 4  # rounded down to a power of two


@pytest.mark.parametrize("pages_per_tile,min_pages,max_splits", DECODE_CONFIGS)
def test_gqa_decode_tiles_and_splits_equal_torch(pages_per_tile, min_pages, max_splits) -> None:
    from lab.engine.kernels.paged_decode import gqa_decode_triton

    meta = random_decode_meta(DECODE_LENS, DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=pages_per_tile, width=12)
    meta.seq_lens_tensor[0] = 0
    k, v = random_caches([(2, 16), (2, 8)], NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE, seed=max_splits)
    q = torch.randn(len(DECODE_LENS), 6, 16, device=DEVICE)  # group 3, Dv != D
    config = _decode_config(pages_per_tile, min_pages, max_splits, combine_block_dv=4)  # 2 combine column blocks
    got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, 0.3, config)
    torch.testing.assert_close(got, gqa_decode_attention_torch(q, k, v, meta, 0.3), **TOL)
    assert torch.equal(got[0], torch.zeros_like(got[0]))


@pytest.mark.parametrize("pages_per_tile,min_pages,max_splits", DECODE_CONFIGS[1:4])
def test_mla_decode_tiles_and_splits_equal_torch(pages_per_tile, min_pages, max_splits) -> None:
    from lab.engine.kernels.mla_decode import mla_decode_triton

    rank, rope = 32, 16
    meta = random_decode_meta(DECODE_LENS, DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=7, width=12)
    meta.seq_lens_tensor[0] = 0
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE, seed=pages_per_tile)
    q = torch.randn(len(DECODE_LENS), 18, rank + rope, device=DEVICE)  # 2 head blocks, the second partial
    config = _decode_config(pages_per_tile, min_pages, max_splits, combine_block_dv=16)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.1, config)
    torch.testing.assert_close(got, mla_decode_attention_torch(q, cache, meta, rank, 0.1), **TOL)
    assert torch.equal(got[0], torch.zeros_like(got[0]))


def test_combine_skips_empty_splits_garbage() -> None:
    """Splits with no keys (m = -inf) never write acc: whatever the buffer holds there must not leak."""
    from lab.engine.kernels.split_k import combine_splits

    m = torch.tensor([[[0.5, float("-inf"), -1.0, float("-inf")]]], device=DEVICE)
    l = torch.tensor([[[2.0, 0.0, 3.0, 0.0]]], device=DEVICE)
    acc = torch.randn(1, 1, 4, 8, device=DEVICE)
    acc[:, :, 1] = float("nan")
    acc[:, :, 3] = float("inf")
    w = torch.exp(torch.tensor([0.0, -1.5], device=DEVICE))
    want = (w[0] * acc[0, 0, 0] + w[1] * acc[0, 0, 2]) / (w[0] * 2.0 + w[1] * 3.0)
    out = combine_splits(m, l, acc, torch.empty(1, 1, 8, device=DEVICE), block_dv=4)
    torch.testing.assert_close(out[0, 0], want, **TOL)
    empty = combine_splits(torch.full_like(m, float("-inf")), torch.zeros_like(l), acc, torch.empty(1, 1, 8, device=DEVICE))
    assert torch.equal(empty, torch.zeros_like(empty))  # a padding row: zeros, not NaN


def test_grid_splits_follow_batch_and_heads_only() -> None:
    """More splits when few (batch, head) programs exist, up to the config's cap; never the table width,
    so an eager step (tight table) and a graph replay (padded table) split alike."""
    from lab.engine.kernels.mla_decode import MLA_DECODE
    from lab.engine.kernels.paged_decode import GQA_DECODE
    from lab.engine.kernels.split_k import grid_splits

    assert grid_splits(1, 2, GQA_DECODE) == GQA_DECODE.max_splits  # qwen batch 1: 2 kv heads
    assert grid_splits(1, 1, MLA_DECODE) == MLA_DECODE.max_splits  # V2-Lite: one head block
    assert grid_splits(1, 2, dataclasses.replace(GQA_DECODE, max_splits=5)) == 5
    assert grid_splits(64, 2, GQA_DECODE) == 4  # big batch: the grid is full already
    assert grid_splits(512, 2, GQA_DECODE) == 1


@pytest.mark.parametrize("model,overrides", [
    ("tiny", {"num_hidden_layers": 1, "vocab_size": 512}),
    ("r1-distill-qwen-1.5b", dict(SMALL_QWEN, num_hidden_layers=1)),
])
def test_model_mixed_step_triton_backend_equals_reference(model, overrides) -> None:
    step = ([1, 4, 6], [9, 4, 10])  # a decode row, a prefill from 0, a chunk over 4 cached tokens
    outs = model_step_outputs(model, overrides, step, DECODE_BLOCK, backends=("reference", "triton"), device=DEVICE)
    torch.testing.assert_close(outs["triton"], outs["reference"], atol=1e-4, rtol=1e-4)
