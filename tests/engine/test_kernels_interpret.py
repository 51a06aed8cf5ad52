"""Triton attention kernels vs the per-sequence oracles, through Triton's CPU interpreter (float32).

The varlen GQA kernel runs mixed steps (decode rows, prefill from position 0, chunks over cached
context, contexts over several shuffled blocks, several block sizes) against
`attention.paged_attention`; the split-K decode kernels run against the vectorized torch decode,
padding rows (seq len 0) included; one-layer models run a mixed step on the "triton" backend
(MLA: absorbed decode kernel for the decode row + SDPA per chunk; GQA: the varlen kernel) against
the "reference" backend. On a GPU the same tests run the compiled kernels.
"""
from __future__ import annotations

from tests.engine.triton_interpret import DEVICE, ON_GPU  # first: sets TRITON_INTERPRET=1 without CUDA
from tests.engine.triton_interpret import interpreter_scalar_index  # noqa: F401  (autouse in this module)

import pytest
import torch

from lab.engine.attention import paged_attention
from lab.engine.decode_attention import gqa_decode_attention_torch, mla_decode_attention_torch
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

    meta = random_decode_meta([1, 7, 16, 33, 50], DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=heads, width=8)  # splits <= 8
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
    meta = random_decode_meta([1, 7, 16, 33], DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=3)
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE)
    q = torch.randn(4, heads, rank + rope, device=DEVICE)
    want = mla_decode_attention_torch(q, cache, meta, rank, 0.1)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.1)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("model,overrides", [
    ("tiny", {"num_hidden_layers": 1, "vocab_size": 512}),
    ("r1-distill-qwen-1.5b", dict(SMALL_QWEN, num_hidden_layers=1)),
])
def test_model_mixed_step_triton_backend_equals_reference(model, overrides) -> None:
    step = ([1, 4, 6], [9, 4, 10])  # a decode row, a prefill from 0, a chunk over 4 cached tokens
    outs = model_step_outputs(model, overrides, step, DECODE_BLOCK, backends=("reference", "triton"), device=DEVICE)
    torch.testing.assert_close(outs["triton"], outs["reference"], atol=1e-4, rtol=1e-4)
