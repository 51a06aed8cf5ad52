"""The loop-free hot-path pieces equal their plain oracles on CPU (float32).

Vectorized decode attention (GQA groups, MLA latents) vs the per-sequence `paged_attention` /
`latent_attention`, over random caches with shuffled blocks and mixed lengths; SDPA prefill and the
mixed-step torch path (decode rows batched, SDPA per chunk over cached context) vs
`paged_attention`; whole models on mixed steps, "torch" vs "reference" backend; grouped-GEMM MoE
vs the per-expert loop; the engine on the "torch" backend vs the "reference" backend, token for
token, also under chunked prefill.
"""
from __future__ import annotations

import pytest
import torch

from lab.engine import LLM, SamplingParams
from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.attention.reference import paged_attention
from lab.engine.attention.decode import gqa_decode_attention_torch, mla_decode_attention_torch
from lab.engine.attention.reference import latent_attention
from lab.engine.models.moe import FusedExperts
from lab.engine.attention.prefill import gqa_mixed_attention_torch, prefill_attention_sdpa
from tests.engine.paged_fixtures import SMALL_QWEN, model_step_outputs, random_caches, random_decode_meta, random_step_meta

SEQ_LENS = [1, 7, 16, 33, 50]  # a lone token, partial blocks, exact block, straddling blocks
BLOCK_SIZE, NUM_BLOCKS = 4, 64


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (8, 2), (6, 1)])
def test_gqa_decode_vectorized_equals_per_sequence(num_heads: int, num_kv_heads: int) -> None:
    head_dim = 16
    meta = random_decode_meta(SEQ_LENS, BLOCK_SIZE, NUM_BLOCKS, "cpu", seed=num_heads)
    k_cache, v_cache = random_caches([(num_kv_heads, head_dim)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    q = torch.randn(len(SEQ_LENS), num_heads, head_dim)
    want = paged_attention(q, k_cache, v_cache, meta, 0.25)
    got = gqa_decode_attention_torch(q, k_cache, v_cache, meta, 0.25)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mla_decode_vectorized_equals_per_sequence() -> None:
    rank, rope, heads = 32, 8, 4
    meta = random_decode_meta(SEQ_LENS, BLOCK_SIZE, NUM_BLOCKS, "cpu", seed=3)
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    q = torch.randn(len(SEQ_LENS), heads, rank + rope)
    want = latent_attention(q, cache, meta, rank, 0.1)
    got = mla_decode_attention_torch(q, cache, meta, rank, 0.1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_padding_rows_attend_to_nothing() -> None:
    """A CUDA-graph batch pads with seq len 0: those rows must come out as zeros, not NaN."""
    meta = random_decode_meta([5, 9], BLOCK_SIZE, NUM_BLOCKS, "cpu")
    meta.seq_lens_tensor[1] = 0
    k_cache, v_cache = random_caches([(2, 8)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    out = gqa_decode_attention_torch(torch.randn(2, 4, 8), k_cache, v_cache, meta, 0.3)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isfinite(out).all()


def test_sdpa_prefill_equals_paged_attention() -> None:
    lens, heads, kv_heads, dim = [5, 12, 3], 6, 2, 8
    starts = [0, 5, 17, 20]
    tables = [[0, 1], [2, 3, 4], [5]]
    slots = torch.tensor([t[p // 4] * 4 + p % 4 for t, n in zip(tables, lens) for p in range(n)])
    meta = AttentionMetadata(starts, lens, tables, slots, 4, backend="torch", no_cached_context=True)
    q, k, v = torch.randn(20, heads, dim), torch.randn(20, kv_heads, dim), torch.randn(20, kv_heads, dim)
    k_cache, v_cache = torch.zeros(6, 4, kv_heads, dim), torch.zeros(6, 4, kv_heads, dim)
    k_cache.view(-1, kv_heads, dim)[slots] = k
    v_cache.view(-1, kv_heads, dim)[slots] = v
    want = paged_attention(q, k_cache, v_cache, meta, 0.35)
    torch.testing.assert_close(prefill_attention_sdpa(q, k, v, meta, 0.35), want, atol=1e-5, rtol=1e-5)


# (query lens, seq lens): decode rows, prefills from 0, chunks over cached context, a lone token
MIXED_STEP = ([1, 5, 1, 13, 9, 1, 2], [9, 5, 40, 13, 30, 1, 2])


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2), (8, 1)])
def test_gqa_mixed_step_equals_per_sequence(num_heads: int, num_kv_heads: int) -> None:
    query_lens, seq_lens = MIXED_STEP
    meta = random_step_meta(query_lens, seq_lens, BLOCK_SIZE, NUM_BLOCKS, "cpu", seed=num_heads)
    k_cache, v_cache = random_caches([(num_kv_heads, 16)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    q = torch.randn(sum(query_lens), num_heads, 16)
    want = paged_attention(q, k_cache, v_cache, meta, 0.3)
    torch.testing.assert_close(gqa_mixed_attention_torch(q, k_cache, v_cache, meta, 0.3), want, atol=1e-5, rtol=1e-5)


def test_step_split_separates_decode_rows_from_spans() -> None:
    meta = random_step_meta(*MIXED_STEP, BLOCK_SIZE, NUM_BLOCKS, "cpu")
    split = meta.split
    assert split.decode_rows.tolist() == [0, 6, 29]  # rows of the three one-token sequences
    assert split.decode_meta.seq_lens == [9, 40, 1] and split.decode_meta.is_pure_decode
    assert split.decode_meta.block_tables_tensor.tolist() == meta.block_tables_tensor[[0, 2, 5]].tolist()
    assert [(p.seq, p.start, p.end, p.seq_len) for p in split.prefills] == [
        (1, 1, 6, 5), (3, 7, 20, 13), (4, 20, 29, 30), (6, 30, 32, 2)
    ]
    assert meta.max_query_len == 13


@pytest.mark.parametrize("step", [MIXED_STEP, ([3, 8, 1], [20, 8, 12])], ids=["mixed", "chunks"])
def test_mla_model_mixed_step_torch_equals_reference(step) -> None:
    """MLA's split path (absorbed decode rows + expanded SDPA per span) vs the float32 oracle loop."""
    outs = model_step_outputs("tiny", {"num_hidden_layers": 2}, step, BLOCK_SIZE)
    torch.testing.assert_close(outs["torch"], outs["reference"], atol=1e-4, rtol=1e-4)


def test_mla_model_prefill_without_context_torch_equals_reference() -> None:
    outs = model_step_outputs("tiny", {"num_hidden_layers": 2}, ([5, 13, 1], [5, 13, 1]), BLOCK_SIZE)
    torch.testing.assert_close(outs["torch"], outs["reference"], atol=1e-4, rtol=1e-4)


def test_gqa_model_mixed_step_torch_equals_reference() -> None:
    outs = model_step_outputs("r1-distill-qwen-1.5b", SMALL_QWEN, MIXED_STEP, BLOCK_SIZE)
    torch.testing.assert_close(outs["torch"], outs["reference"], atol=1e-4, rtol=1e-4)


def test_grouped_moe_equals_expert_loop() -> None:
    torch.manual_seed(0)
    experts = FusedExperts(num_experts=8, hidden_size=16, intermediate_size=12)
    torch.nn.init.normal_(experts.w13, std=0.2)
    torch.nn.init.normal_(experts.w2, std=0.2)
    x = torch.randn(10, 16)
    ids = torch.stack([torch.randperm(8)[:3] for _ in range(10)])  # expert 0..7, some unused
    ids[:, 0] = 5  # one crowded expert
    weights = torch.rand(10, 3)
    want = experts(x, weights, ids)
    experts.backend = "grouped"
    torch.testing.assert_close(experts(x, weights, ids), want, atol=1e-5, rtol=1e-5)


def test_engine_torch_backend_matches_reference_backend() -> None:
    prompts = [[5, 6, 7, 8, 9, 10] * 5, [11, 12, 13], list(range(20, 61))]
    params = SamplingParams(temperature=0.0, max_tokens=10)
    outs = {}
    for backend in ("reference", "torch"):
        llm = LLM("tiny", attention_backend=backend, moe_backend="grouped" if backend == "torch" else "loop", block_size=4)
        outs[backend] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    assert outs["torch"] == outs["reference"]


@pytest.mark.parametrize("model", ["tiny", "r1-distill-qwen-1.5b"])
def test_engine_torch_backend_matches_reference_under_chunked_prefill(model) -> None:
    """A 10-token budget chunks the long prompts and mixes their chunks with other requests' decodes."""
    prompts = [list(range(20, 45)), [5, 6, 7], list(range(100, 117))]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    small = {"num_hidden_layers": 2} if model == "tiny" else SMALL_QWEN
    outs = {}
    for backend in ("reference", "torch"):
        llm = LLM(model, attention_backend=backend, block_size=4, max_num_batched_tokens=10, max_num_seqs=3,
                  hf_overrides=small, dtype="float32", num_gpu_blocks=96)
        outs[backend] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    assert outs["torch"] == outs["reference"]
