"""Triton kernels and CUDA graphs vs the pure-torch paths, on the GPU (skipped without CUDA).

Each kernel runs on the same random paged cache (shuffled blocks, mixed lengths, padding rows) as
its torch oracle in bf16; decode with CUDA graphs must produce the same tokens as the eager engine.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEQ_LENS = [1, 15, 16, 17, 100, 1000, 333]
BLOCK_SIZE, NUM_BLOCKS = 16, 256
ATOL = 2e-2  # bf16 inputs, float32 accumulation in both paths; outputs are O(1)


def _case(seq_lens, width=None):
    from tests.engine.paged_fixtures import random_decode_meta

    return random_decode_meta(seq_lens, BLOCK_SIZE, NUM_BLOCKS, "cuda", seed=1, width=width)


@pytest.mark.parametrize("heads,kv_heads,dim", [(12, 2, 128), (28, 4, 128), (8, 8, 64)])
@pytest.mark.parametrize("width", [None, 80])  # tight table, and padded to a graph's fixed width
def test_gqa_triton_equals_torch(heads, kv_heads, dim, width) -> None:
    from lab.engine.decode_attention import gqa_decode_attention_torch
    from lab.engine.kernels.paged_decode import gqa_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _case(SEQ_LENS, width)
    k, v = random_caches([(kv_heads, dim)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    q = torch.randn(len(SEQ_LENS), heads, dim, device="cuda", dtype=torch.bfloat16)
    want = gqa_decode_attention_torch(q, k, v, meta, dim**-0.5)
    got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, dim**-0.5)
    torch.testing.assert_close(got.float(), want.float(), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("heads,rank,rope", [(16, 512, 64), (8, 64, 16), (128, 512, 64)])
def test_mla_triton_equals_torch(heads, rank, rope) -> None:
    from lab.engine.decode_attention import mla_decode_attention_torch
    from lab.engine.kernels.mla_decode import mla_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _case(SEQ_LENS)
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    q = torch.randn(len(SEQ_LENS), heads, rank + rope, device="cuda", dtype=torch.bfloat16) * 0.1
    want = mla_decode_attention_torch(q, cache, meta, rank, 0.1)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.1)
    torch.testing.assert_close(got.float(), want.float(), atol=ATOL, rtol=ATOL)


def test_padding_rows_give_zeros() -> None:
    from lab.engine.kernels.paged_decode import gqa_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _case([40, 3])
    meta.seq_lens_tensor[1] = 0
    k, v = random_caches([(2, 128)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    out = gqa_decode_triton(torch.randn(2, 12, 128, device="cuda", dtype=torch.bfloat16), k, v,
                            meta.block_tables_tensor, meta.seq_lens_tensor, 0.1)
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros_like(out[1]))


def test_kv_write_equals_index_copy_and_skips_padding() -> None:
    from lab.engine.attention import write_to_cache
    from lab.engine.kernels.kv_write import write_kv_triton

    cache_a = torch.zeros(8, 16, 2, 128, device="cuda", dtype=torch.bfloat16)
    cache_b = cache_a.clone()
    qkv = torch.randn(5, 3, 2, 128, device="cuda", dtype=torch.bfloat16)
    values = qkv[:, 2]  # a strided view, as v from the fused qkv projection
    slots = torch.tensor([3, 17, 40, 127, 64], device="cuda")
    write_to_cache(cache_a, slots, values)
    write_kv_triton(cache_b, slots, values)
    assert torch.equal(cache_a, cache_b)
    write_kv_triton(cache_b, torch.full((5,), -1, device="cuda"), values * 2)  # padding: no writes
    assert torch.equal(cache_a, cache_b)


@pytest.mark.parametrize("model", ["tiny", "r1-distill-qwen-1.5b"])
def test_cuda_graph_decode_matches_eager(model) -> None:
    from lab.engine import LLM, SamplingParams

    prompts = [list(range(100, 100 + n)) for n in (5, 40, 17)]
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    kw = dict(max_model_len=512, max_num_seqs=8, num_gpu_blocks=256, hf_overrides={"num_hidden_layers": 4})
    tokens = {}
    for eager in (True, False):
        llm = LLM(model, enforce_eager=eager, **kw)
        assert (llm.engine.graphs is None) == eager
        tokens[eager] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    # bf16: a near-tie may flip late; the first tokens must agree exactly
    assert [t[:8] for t in tokens[True]] == [t[:8] for t in tokens[False]]


def test_triton_backend_matches_reference_backend() -> None:
    from lab.engine import LLM, SamplingParams

    prompts = [list(range(200, 200 + n)) for n in (9, 33)]
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    kw = dict(dtype="float32", max_model_len=256, num_gpu_blocks=64, enforce_eager=True)
    ref = LLM("tiny", attention_backend="reference", moe_backend="loop", **kw).generate(prompts, params)
    fast = LLM("tiny", attention_backend="triton", moe_backend="grouped", **kw).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in ref]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_ops_equal_torch(dtype) -> None:
    from lab.engine.kernels.fused_ops import rms_norm_triton, rotate_triton, silu_and_mul_triton
    from lab.engine.models.layers import RMSNorm, silu_and_mul
    from lab.engine.models.rope import RotaryEmbedding

    torch.manual_seed(0)
    norm = RMSNorm(1536, 1e-6).cuda().to(dtype)
    norm.weight.data.normal_(1.0, 0.2)
    x = torch.randn(7, 3 * 1536, device="cuda", dtype=dtype)[:, 1536:3072]  # a strided column slice
    torch.testing.assert_close(rms_norm_triton(x, norm.weight, 1e-6), norm(x), atol=1e-2, rtol=1e-2)
    gate_up = torch.randn(5, 2 * 1408, device="cuda", dtype=dtype)
    torch.testing.assert_close(silu_and_mul_triton(gate_up), silu_and_mul(gate_up), atol=1e-2, rtol=1e-2)
    positions = torch.tensor([0, 5, 17, 900, 3, 1, 2], device="cuda")
    for interleaved in (False, True):
        rot = RotaryEmbedding(64, 10000.0, None, interleaved).cuda()(positions)
        q = torch.randn(7, 12, 3 * 64, device="cuda", dtype=dtype)[..., 64:128]  # strided, like q_pe
        torch.testing.assert_close(rotate_triton(q, rot.cos, rot.sin, interleaved), rot.apply(q), atol=1e-2, rtol=1e-2)


def test_fused_ops_engine_matches_unfused() -> None:
    from lab.engine import LLM, SamplingParams

    prompts = [list(range(300, 300 + n)) for n in (11, 29)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    kw = dict(dtype="float32", max_model_len=256, num_gpu_blocks=64, moe_backend="loop", enforce_eager=True)
    plain = LLM("tiny", fused_ops=False, **kw).generate(prompts, params)
    fused = LLM("tiny", fused_ops=True, **kw).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in fused] == [o.outputs[0].token_ids for o in plain]
