"""Triton kernels and CUDA graphs vs the pure-torch paths, on the GPU (skipped without CUDA).

Each kernel runs on the same random paged cache (shuffled blocks, mixed lengths, padding rows) as
its torch oracle in bf16 (the split-K decode kernels also at the real Qwen / V2-Lite shapes under
several `DecodeConfig`s); decode with CUDA graphs must produce the same tokens as the eager engine.
Mixed steps (decode rows + prefill chunks over cached context): the varlen GQA kernel vs the
per-sequence oracle in bf16, whole models on the "triton" backend vs "reference" in float32, and
the engine under chunked prefill, token for token.
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
    from lab.engine.attention.decode import gqa_decode_attention_torch
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
    from lab.engine.attention.decode import mla_decode_attention_torch
    from lab.engine.kernels.mla_decode import mla_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _case(SEQ_LENS)
    (cache,) = random_caches([(rank + rope,)], NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    q = torch.randn(len(SEQ_LENS), heads, rank + rope, device="cuda", dtype=torch.bfloat16) * 0.1
    want = mla_decode_attention_torch(q, cache, meta, rank, 0.1)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.1)
    torch.testing.assert_close(got.float(), want.float(), atol=ATOL, rtol=ATOL)


# decode rows with long contexts, prefill from 0, chunks over cached context (one spanning 1000 keys)
MIXED_QUERY_LENS = [1, 1, 200, 1, 77, 513, 1, 16]
MIXED_SEQ_LENS = [15, 1000, 200, 333, 500, 1000, 17, 16]


@pytest.mark.parametrize("heads,kv_heads,dim", [(12, 2, 128), (28, 4, 128), (8, 8, 64), (16, 1, 128)])
@pytest.mark.parametrize("block_size", [16, 64])
def test_varlen_gqa_triton_equals_reference(heads, kv_heads, dim, block_size) -> None:
    from lab.engine.attention.reference import paged_attention
    from lab.engine.kernels.varlen_attention import gqa_varlen_triton
    from lab.engine.attention.prefill import gqa_mixed_attention_torch
    from tests.engine.paged_fixtures import random_caches, random_step_meta

    num_blocks = 4096 // block_size
    meta = random_step_meta(MIXED_QUERY_LENS, MIXED_SEQ_LENS, block_size, num_blocks, "cuda", seed=3)
    k, v = random_caches([(kv_heads, dim)] * 2, num_blocks, block_size, torch.bfloat16, "cuda")
    q = torch.randn(sum(MIXED_QUERY_LENS), heads, dim, device="cuda", dtype=torch.bfloat16)
    want = paged_attention(q, k, v, meta, dim**-0.5)  # float32 math per sequence
    got = gqa_varlen_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, meta.query_start_loc_tensor,
                            dim**-0.5, meta.max_query_len)
    torch.testing.assert_close(got.float(), want.float(), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(gqa_mixed_attention_torch(q, k, v, meta, dim**-0.5).float(), want.float(), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("model", ["tiny", "r1-distill-qwen-1.5b"])
@pytest.mark.parametrize("step", [(MIXED_QUERY_LENS, MIXED_SEQ_LENS), ([5, 9, 1], [5, 9, 1])], ids=["mixed", "prefill"])
def test_model_step_triton_equals_reference(model, step) -> None:
    """Whole models (float32) on one step: MLA's split path and the GQA varlen kernel vs the oracle loops."""
    from tests.engine.paged_fixtures import SMALL_QWEN, model_step_outputs

    overrides = {"num_hidden_layers": 2} if model == "tiny" else dict(SMALL_QWEN, num_attention_heads=8, hidden_size=512)
    outs = model_step_outputs(model, overrides, step, 16, backends=("reference", "triton"), device="cuda", num_blocks=512)
    torch.testing.assert_close(outs["triton"], outs["reference"], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("model", ["tiny", "r1-distill-qwen-1.5b"])
def test_triton_backend_matches_reference_under_chunked_prefill(model) -> None:
    from lab.engine import LLM, SamplingParams

    prompts = [list(range(200, 200 + n)) for n in (9, 70, 33, 150)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    kw = dict(dtype="float32", max_model_len=512, num_gpu_blocks=128, enforce_eager=True, max_num_batched_tokens=32,
              max_num_seqs=3, hf_overrides={"num_hidden_layers": 4})
    ref = LLM(model, attention_backend="reference", moe_backend="loop", **kw).generate(prompts, params)
    fast = LLM(model, attention_backend="triton", moe_backend="grouped", **kw).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in ref]


# Real decode shapes under the split-K knobs: batch 1 at ~540 tokens in a 64-column table (the case
# the tiles are for), and the mixed SEQ_LENS batch (padding row, 1000-token contexts) in 80 columns.
DECODE_CASES = [([540], 64), (SEQ_LENS + [0], 80)]


def _decode_config(**kw):
    from lab.engine.kernels.split_k import DecodeConfig

    return DecodeConfig(**kw)


def _padded_case(seq_lens, width):
    meta = _case([n or 1 for n in seq_lens], width)
    meta.seq_lens_tensor.copy_(torch.tensor(seq_lens, device="cuda"))  # 0: a padding row of a graph batch
    return meta


@pytest.mark.parametrize("pages_per_tile,max_splits,min_pages", [(1, 16, 1), (4, 64, 1), (8, 32, 2), (2, 64, 1), (2, 64, 2)])
@pytest.mark.parametrize("seq_lens,width", DECODE_CASES)
def test_gqa_decode_configs_equal_torch(seq_lens, width, pages_per_tile, max_splits, min_pages) -> None:
    from lab.engine.attention.decode import gqa_decode_attention_torch
    from lab.engine.kernels.paged_decode import gqa_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _padded_case(seq_lens, width)
    k, v = random_caches([(2, 128)] * 2, NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    q = torch.randn(len(seq_lens), 12, 128, device="cuda", dtype=torch.bfloat16)
    config = _decode_config(pages_per_tile=pages_per_tile, max_splits=max_splits, min_pages_per_split=min_pages)
    got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, 128**-0.5, config)
    want = gqa_decode_attention_torch(q, k, v, meta, 128**-0.5)
    torch.testing.assert_close(got.float(), want.float(), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("pages_per_tile,max_splits,min_pages,warps", [(1, 16, 1, 8), (2, 64, 2, 8), (4, 32, 4, 8), (2, 64, 1, 4)])
@pytest.mark.parametrize("seq_lens,width", DECODE_CASES)
def test_mla_decode_configs_equal_torch(seq_lens, width, pages_per_tile, max_splits, min_pages, warps) -> None:
    from lab.engine.attention.decode import mla_decode_attention_torch
    from lab.engine.kernels.mla_decode import mla_decode_triton
    from tests.engine.paged_fixtures import random_caches

    meta = _padded_case(seq_lens, width)
    (cache,) = random_caches([(576,)], NUM_BLOCKS, BLOCK_SIZE, torch.bfloat16, "cuda")
    q = torch.randn(len(seq_lens), 16, 576, device="cuda", dtype=torch.bfloat16) * 0.1
    config = _decode_config(pages_per_tile=pages_per_tile, max_splits=max_splits, min_pages_per_split=min_pages,
                            num_warps=warps)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, 512, 0.1, config)
    want = mla_decode_attention_torch(q, cache, meta, 512, 0.1)
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
    from lab.engine.attention.reference import write_to_cache
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
    tokens, eager_logits = {}, []
    for eager in (True, False):
        llm = LLM(model, enforce_eager=eager, **kw)
        assert (llm.engine.graphs is None) == eager
        if eager:  # keep each step's logits (float32, one row per sequence) to judge a divergence
            sampler = llm.engine.runner.sampler
            sample = sampler.sample
            sampler.sample = lambda logits, *a: eager_logits.append(logits.detach().clone()) or sample(logits, *a)
        tokens[eager] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    # bf16: the two paths round differently (cuBLAS tiles for 3 vs 4 rows, the prefill's attention kernel), so
    # greedy decoding may part where two logits nearly tie. Where a sequence's tokens first differ, the
    # graph's token must have been within NEAR_TIE of the eager step's best logit; everything before is equal.
    near_tie = 0.25  # a few bf16 steps at these logits' size (|logit| ~ 10: spacing 0.06)
    for want, got in zip(tokens[True], tokens[False]):
        first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
        if first is None:
            continue
        assert first >= 2, (first, want, got)
        rows = [row for row in eager_logits[first] if int(row.argmax()) == want[first]]  # step `first`'s rows
        assert rows and min(float(r[want[first]] - r[got[first]]) for r in rows) <= near_tie, (first, want, got)


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


# ---- skinny GEMM (kernels/gemv.py) and fused add + RMSNorm (kernels/fused_ops.py) ----------------
# bf16 W and x, float32 accumulation in both: the kernel's output is compared with a float32 GEMM of
# the same bf16 inputs, within bf16 output rounding (2^-8 relative) plus summation-order noise.

GEMV_SHAPES = {  # (N, K, bias): every projection of the two presets that decode runs through Linear
    "qwen_qkv": (2048, 1536, True), "qwen_o": (1536, 1536, False), "qwen_gate_up": (17920, 1536, False),
    "qwen_down": (1536, 8960, False), "qwen_lm_head": (151936, 1536, False),
    "v2_q": (3072, 2048, False), "v2_kv_a": (576, 2048, False), "v2_kv_b": (4096, 512, False),
    "v2_o": (2048, 2048, False), "v2_gate_up": (21888, 2048, False), "v2_down": (2048, 10944, False),
    "v2_shared_gate_up": (5632, 2048, False), "v2_shared_down": (2048, 2816, False),
    "v2_lm_head": (102400, 2048, False),
}


@pytest.mark.parametrize("m", [1, 3, 8, 16])
@pytest.mark.parametrize("name", list(GEMV_SHAPES))
def test_gemv_bf16_equals_float32_gemm(name, m) -> None:
    from lab.engine.kernels.gemv import gemv

    n, k, has_bias = GEMV_SHAPES[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    b = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16) if has_bias else None
    want = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())
    got = gemv(x, w, b)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)
    logits = gemv(x, w, b, out_dtype=torch.float32)  # LMHead's float32 output: no output rounding
    torch.testing.assert_close(logits, want, atol=2e-3, rtol=2e-3)


def test_gemv_captures_in_a_cuda_graph() -> None:
    from lab.engine.kernels.gemv import gemv

    w = torch.randn(1536, 8960, device="cuda", dtype=torch.bfloat16) * 0.02  # split-K for M >= 2
    x = torch.randn(4, 8960, device="cuda", dtype=torch.bfloat16)
    gemv(x, w)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = gemv(x, w)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(y.float(), x.float() @ w.float().T, atol=1e-2, rtol=1e-2)


def test_linear_and_lm_head_dispatch_to_gemv() -> None:
    from lab.engine.models.layers import Embedding, Linear, LMHead

    lin = Linear(512, 300, bias=True).cuda().to(torch.bfloat16)
    lin.weight.data.normal_(0, 0.02)
    lin.bias.data.normal_()
    head = LMHead(512, 1000, tied_to=Embedding(1000, 512).cuda().to(torch.bfloat16))
    head.tied_to[0].weight.data.normal_(0, 0.02)
    for rows in (1, 16, 17):  # 17: back to cuBLAS
        x = torch.randn(rows, 512, device="cuda", dtype=torch.bfloat16)
        plain_y, plain_logits = lin(x), head(x)
        lin.fused = head.fused = True
        torch.testing.assert_close(lin(x).float(), plain_y.float(), atol=1e-2, rtol=1e-2)
        logits = head(x)
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, plain_logits, atol=1e-2, rtol=1e-2)
        lin.fused = head.fused = False


@pytest.mark.parametrize("hidden", [1536, 2048])
def test_add_rms_norm_bf16_equals_add_then_norm(hidden) -> None:
    from lab.engine.kernels.fused_ops import add_rms_norm_triton
    from lab.engine.models.layers import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(hidden, 1e-6).cuda().to(torch.bfloat16)
    norm.weight.data.normal_(1.0, 0.2)
    x = torch.randn(7, 3 * hidden, device="cuda", dtype=torch.bfloat16)[:, hidden:2 * hidden]  # strided
    residual = torch.randn(7, hidden, device="cuda", dtype=torch.bfloat16)
    want_sum = residual + x
    want = norm(want_sum)
    got, got_sum = add_rms_norm_triton(x, residual, norm.weight, 1e-6)
    assert got_sum.data_ptr() == residual.data_ptr() and torch.equal(got_sum, want_sum)  # in place, same rounding
    torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)


def test_fused_model_forward_close_to_plain_bf16() -> None:
    """A 2-layer bf16 R1-Distill-Qwen with every fused op (GEMV, residual stream, norms) vs the plain path."""
    from lab.engine.attention.metadata import AttentionMetadata
    from lab.engine.kv_cache import allocate_kv_cache
    from lab.engine.loader import load_model
    from lab.engine.models.layers import set_fused_ops

    model = load_model("r1-distill-qwen-1.5b", torch.bfloat16, "cuda", hf_overrides={"num_hidden_layers": 2}).module
    ids = torch.arange(100, 110, device="cuda")  # 10 tokens <= 16: every Linear takes the GEMV path
    logits = {}
    for fused in (False, True):
        set_fused_ops(model, fused)
        cache = allocate_kv_cache(model.kv_cache_spec(torch.bfloat16), 4, 16, torch.device("cuda"))
        meta = AttentionMetadata([0, 10], [10], [[1]], torch.arange(16, 26, device="cuda"), 16)
        with torch.inference_mode():
            logits[fused] = model.compute_logits(model(ids, torch.arange(10, device="cuda"), cache, meta))
    assert logits[True].dtype == torch.float32
    err = (logits[True] - logits[False]).abs().max().item()
    assert err <= 0.05 * logits[False].abs().max().item(), err
    assert (logits[True].argmax(-1) == logits[False].argmax(-1)).float().mean() >= 0.9


# ---- fused MoE (kernels/fused_moe.py) vs FusedExperts' "loop" path, DeepSeek-V2-Lite shapes ----------------------

V2_LITE_MOE = dict(num_experts=64, hidden_size=2048, intermediate_size=1408)


def _v2_lite_experts_and_routing(num_tokens: int, top_k: int = 6):
    from lab.engine.models.moe import FusedExperts

    torch.manual_seed(num_tokens)
    with torch.device("cuda"):
        experts = FusedExperts(**V2_LITE_MOE).to(torch.bfloat16)
    experts.w13.data.normal_(0.0, 2048**-0.5)
    experts.w2.data.normal_(0.0, 1408**-0.5)
    x = torch.randn(num_tokens, 2048, device="cuda", dtype=torch.bfloat16)
    weights, ids = torch.rand(num_tokens, 64, device="cuda").softmax(-1).topk(top_k, dim=-1)
    ids[num_tokens // 2 :, 0] = 7  # several tokens share an expert
    return experts, x, weights.float(), ids


@pytest.mark.parametrize("num_tokens", [1, 4, 32])
def test_fused_moe_equals_loop_bf16(num_tokens) -> None:
    from lab.engine.kernels.fused_moe import FusedMoEConfig, fused_moe

    experts, x, weights, ids = _v2_lite_experts_and_routing(num_tokens)
    want = experts(x, weights, ids).float()  # "loop"
    configs = [None, FusedMoEConfig(split=1), FusedMoEConfig(block_i=8, block_k_up=512, block_h=8, split=3),
               FusedMoEConfig(block_h=32, block_k_down=256, split=6, num_warps_up=8, num_warps_down=8)]  # 256: masked I
    for cfg in configs:
        got = fused_moe(x, experts.w13, experts.w2, weights, ids, cfg)
        assert got.dtype == torch.bfloat16 and got.shape == x.shape
        torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_fused_moe_backend_replays_in_cuda_graph() -> None:
    """FusedExperts "triton" captures (no host sync) and a replay with new routing equals the loop path."""
    experts, x, weights, ids = _v2_lite_experts_and_routing(4)
    experts.backend = "triton"
    static = [t.clone() for t in (x, weights, ids)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        experts(*static)  # warm-up: compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = experts(*static)
    x2, weights2, ids2 = torch.randn_like(x), weights.flip(0), (ids + 5) % 64  # new routing, same buffers
    for buf, new in zip(static, (x2, weights2, ids2)):
        buf.copy_(new)
    graph.replay()
    experts.backend = "loop"
    torch.testing.assert_close(out.float(), experts(x2, weights2, ids2).float(), atol=2e-2, rtol=2e-2)


def test_route_greedy_triton_equals_gate() -> None:
    from types import SimpleNamespace

    from lab.engine.models.moe import MoEGate

    config = SimpleNamespace(n_routed_experts=64, hidden_size=2048, num_experts_per_tok=6, n_group=1, topk_group=1,
                             topk_method="greedy", scoring_func="softmax", norm_topk_prob=False,
                             routed_scaling_factor=1.0)
    gate = MoEGate(config).cuda()
    gate.weight.data.normal_(0.0, 0.05)
    x = torch.randn(33, 2048, device="cuda", dtype=torch.bfloat16)
    want_w, want_ids = gate(x)
    gate.fused = True
    got_w, got_ids = gate(x)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-5)


def test_triton_moe_backend_generates_like_loop() -> None:
    """3-layer V2-Lite (float32, dummy weights): "triton" experts + fused routing give the loop path's tokens."""
    from lab.engine import LLM, SamplingParams

    prompts = [list(range(500, 500 + n)) for n in (7, 30)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    kw = dict(dtype="float32", max_model_len=256, num_gpu_blocks=64, enforce_eager=True,
              hf_overrides={"num_hidden_layers": 3})
    plain = LLM("deepseek-v2-lite", moe_backend="loop", fused_ops=False, **kw).generate(prompts, params)
    fast = LLM("deepseek-v2-lite", moe_backend="triton", fused_ops=True, **kw).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]


# ---- decode fusions: gate_up + SiLU-mul (kernels/gate_up_silu.py), RoPE + KV write (kernels/rope_kv_write.py) ----

GATE_UP_SHAPES = {  # (I, K, bias): the SwiGLU MLPs that decode runs at one row
    "qwen_mlp": (8960, 1536, False), "v2_shared": (2816, 2048, False), "v2_dense": (10944, 2048, False),
    "biased": (1000, 512, True),
}


@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("name", list(GATE_UP_SHAPES))
def test_gate_up_silu_bf16_equals_unfused(name, m) -> None:
    """vs the float32 math of the same bf16 inputs, and at one row vs the unfused kernels (GEMV, then SiLU-mul)."""
    from lab.engine.kernels.fused_ops import silu_and_mul_triton
    from lab.engine.kernels.gate_up_silu import gate_up_silu
    from lab.engine.kernels.gemv import gemv
    from lab.engine.models.layers import silu_and_mul

    i, k, has_bias = GATE_UP_SHAPES[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(2 * i, k, device="cuda", generator=g) * 0.05).to(torch.bfloat16)
    b = torch.randn(2 * i, device="cuda", generator=g).to(torch.bfloat16) if has_bias else None
    got = gate_up_silu(x, w, b)
    assert got.dtype == torch.bfloat16 and got.shape == (m, i)
    gate_up = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())
    torch.testing.assert_close(got.float(), silu_and_mul(gate_up), atol=2e-2, rtol=2e-2)
    if m == 1:  # same roundings as the two kernels it replaces; only the summation order may differ
        unfused = silu_and_mul_triton(gemv(x, w, b)).float()
        assert (got.float() - unfused).abs().max().item() <= 2e-2 * unfused.abs().max().item()


def test_gated_mlp_takes_fused_gate_up_at_one_row() -> None:
    from lab.engine.models.layers import GatedMLP, set_fused_ops

    torch.manual_seed(0)
    mlp = GatedMLP(1536, 8960).cuda().to(torch.bfloat16)
    for p in mlp.parameters():
        p.data.normal_(0, 0.03)
    for rows in (1, 2):  # 2: gate_up on cuBLAS, SiLU-mul kernel
        x = torch.randn(rows, 1536, device="cuda", dtype=torch.bfloat16)
        set_fused_ops(mlp, False)
        want = mlp(x).float()
        set_fused_ops(mlp, True)
        torch.testing.assert_close(mlp(x).float(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("heads,kv_heads,dim", [(12, 2, 128), (28, 4, 128), (32, 8, 64)])
def test_rope_kv_write_bitwise_equals_rotate_then_write(interleaved, heads, kv_heads, dim) -> None:
    from lab.engine.kernels.fused_ops import rotate_triton
    from lab.engine.kernels.kv_write import write_kv_triton
    from lab.engine.kernels.rope_kv_write import rope_kv_write_triton
    from lab.engine.models.rope import RotaryEmbedding

    tokens = 6
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, device="cuda", dtype=torch.bfloat16)
    q, k, v = (t.view(tokens, -1, dim) for t in qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1))
    rot = RotaryEmbedding(dim, 1e6, None, interleaved).cuda()(torch.tensor([0, 1, 511, 4000, 7, 30], device="cuda"))
    slots = torch.tensor([3, 17, -1, 127, 64, 200], device="cuda")  # -1: padding
    want_k = torch.randn(16, 16, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    want_v = torch.randn_like(want_k)
    got_k, got_v = want_k.clone(), want_v.clone()
    want_q = rotate_triton(q, rot.cos, rot.sin, interleaved)
    write_kv_triton(want_k, slots, rotate_triton(k, rot.cos, rot.sin, interleaved))
    write_kv_triton(want_v, slots, v)
    got_q = rope_kv_write_triton(q, k, v, rot.cos, rot.sin, interleaved, got_k, got_v, slots)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
    torch.testing.assert_close(got_q.float(), rot.apply(q.float()).float(), atol=2e-2, rtol=2e-2)  # vs torch RoPE


def _fused_decode_step_vs_plain(preset: str, moe_backend: str | None = None, takes_fused=None) -> None:
    """A 2-layer bf16 decode step (one token after a 10-token prompt, the same plain prefill for both): every
    fused op vs the plain path, logits and the cache rows the step wrote. `takes_fused(model, meta)`, when
    given, must say the fused cache write is taken exactly when fused ops are on."""
    from lab.engine.attention.metadata import AttentionMetadata, build_step_tensors
    from lab.engine.kv_cache import allocate_kv_cache
    from lab.engine.loader import load_model
    from lab.engine.models.layers import set_fused_ops
    from lab.engine.models.moe import set_moe_backend

    model = load_model(preset, torch.bfloat16, "cuda", hf_overrides={"num_hidden_layers": 2}).module
    if moe_backend is not None:
        set_moe_backend(model, moe_backend)
    prompt = torch.arange(100, 110, device="cuda")
    logits, caches = {}, {}
    for fused in (False, True):
        set_fused_ops(model, False)  # the same plain prefill for both
        cache = allocate_kv_cache(model.kv_cache_spec(torch.bfloat16), 4, 16, torch.device("cuda"))
        with torch.inference_mode():
            meta = AttentionMetadata([0, 10], [10], [[1]], torch.arange(16, 26, device="cuda"), 16, backend="triton")
            build_step_tensors(meta, torch.device("cuda"))
            model(prompt, torch.arange(10, device="cuda"), cache, meta)
            set_fused_ops(model, fused)
            meta = AttentionMetadata([0, 1], [11], [[1]], torch.tensor([26], device="cuda"), 16, backend="triton",
                                     pure_decode=True)
            build_step_tensors(meta, torch.device("cuda"))
            if takes_fused is not None:
                assert takes_fused(model, meta) == fused
            logits[fused] = model.compute_logits(model(torch.tensor([7], device="cuda"), torch.tensor([10], device="cuda"),
                                                       cache, meta))
        caches[fused] = cache
    err = (logits[True] - logits[False]).abs().max().item()
    assert err <= 0.05 * logits[False].abs().max().item(), err
    for plain_layer, fused_layer in zip(caches[False], caches[True]):
        for plain, fused in zip(plain_layer, fused_layer):
            torch.testing.assert_close(fused[1, 10].float(), plain[1, 10].float(), atol=2e-2, rtol=2e-2)


def test_fused_decode_step_close_to_plain_bf16() -> None:
    """R1-Distill-Qwen: M=1 GEMV, gate_up + SiLU-mul, RoPE + KV write."""
    _fused_decode_step_vs_plain("r1-distill-qwen-1.5b")


def test_split_step_copies_survive_pinned_buffer_reuse() -> None:
    """split_step's asynchronous copies from pinned memory: the host buffers are dropped and the pinned pool
    reused while the GPU is still busy, yet the device tensors hold the step's values."""
    from tests.engine.paged_fixtures import random_step_meta

    meta = random_step_meta([1, 5, 1, 3, 1], [9, 5, 40, 10, 2], 16, 64, "cuda", seed=1)
    torch.cuda._sleep(50_000_000)  # ~tens of ms of GPU work queued ahead of the copies
    split = meta.split
    for _ in range(64):  # churn the caching host allocator with same-sized pinned blocks
        torch.full((5,), -7, dtype=torch.long, pin_memory=True)
    assert split.decode_rows.tolist() == [0, 6, 10]
    assert split.decode_meta.seq_lens_tensor.tolist() == [9, 40, 2]
    assert split.decode_meta.block_tables_tensor.tolist() == [row for i, row in enumerate(meta.block_tables_tensor.tolist())
                                                              if i in (0, 2, 4)]


@pytest.mark.parametrize("heads", [16, 128])  # V2-Lite, V3
@pytest.mark.parametrize("interleaved", [True, False])
def test_mla_latent_write_bitwise_equals_unfused_kernels(heads, interleaved) -> None:
    from lab.engine.kernels.fused_ops import rms_norm_triton, rotate_triton
    from lab.engine.kernels.kv_write import write_kv_triton
    from lab.engine.kernels.mla_latent_write import mla_rope_latent_write_triton
    from lab.engine.models.rope import RotaryEmbedding

    tokens, rank, rope = 5, 512, 64
    q = torch.randn(tokens, heads, 128 + rope, device="cuda", dtype=torch.bfloat16)
    q_pe = q[..., 128:]  # strided, as in MLAttention
    kv_a = torch.randn(tokens, rank + rope, device="cuda", dtype=torch.bfloat16)
    weight = (torch.randn(rank, device="cuda") * 0.2 + 1).to(torch.bfloat16)
    rot = RotaryEmbedding(rope, 1e4, None, interleaved).cuda()(torch.tensor([0, 9, 4000, 3, 77], device="cuda"))
    slots = torch.tensor([3, 17, -1, 127, 64], device="cuda")
    want = torch.randn(16, 16, rank + rope, device="cuda", dtype=torch.bfloat16)
    got = want.clone()
    c_kv, k_pe = kv_a.split([rank, rope], dim=-1)
    k_rot = rotate_triton(k_pe.unsqueeze(1), rot.cos, rot.sin, interleaved).squeeze(1)
    write_kv_triton(want, slots, torch.cat([rms_norm_triton(c_kv, weight, 1e-6), k_rot], dim=-1))
    got_q = mla_rope_latent_write_triton(q_pe, kv_a, weight, 1e-6, rot.cos, rot.sin, interleaved, got, slots)
    assert torch.equal(got_q, rotate_triton(q_pe, rot.cos, rot.sin, interleaved))
    assert torch.equal(got, want)


def test_fused_mla_decode_step_close_to_plain_bf16() -> None:
    """V2-Lite: GEMV, gate_up + SiLU-mul in the dense and shared-expert MLPs, the fused latent write."""
    _fused_decode_step_vs_plain(
        "deepseek-v2-lite", moe_backend="triton",
        takes_fused=lambda model, meta: model.model.layers[0].self_attn.takes_fused_latent_write(
            model.model.rotary_emb(torch.tensor([10], device="cuda")), meta))
