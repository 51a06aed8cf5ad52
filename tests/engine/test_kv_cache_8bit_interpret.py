"""The Triton kernels on 8-bit KV caches (fp8 e4m3 and int8), through Triton's CPU interpreter (float32).

Writers against `kv_quant.write_rows` (the torch coding): the plain row write (GQA heads; MLA's latent row in
two scale parts), RoPE + K/V write, and MLA's norm + RoPE + latent write, padding slots included. Their scales
must match to float32 rounding and their codes decode to the same values; int8 codes are compared exactly.
On the CPU the codes must equal torch's bit for bit; on a GPU (where x / scale may differ in its last bit)
a code may differ by one step, rarely. Triton 3.9's interpreter converts float32 to e4m3 without the carry
of a round-up into the next binade (125.9 codes as 64, not 128) and flushes subnormals; the
`interpreter_e4m3_rounding` fixture gives it the compiled kernels' conversion (`cvt.rn.satfinite`: round to
nearest even, saturating), as `triton_interpret` patches another interpreter gap.
"""
from __future__ import annotations

from tests.engine.triton_interpret import DEVICE, ON_GPU  # first: sets TRITON_INTERPRET=1 without CUDA
from tests.engine.triton_interpret import interpreter_scalar_index  # noqa: F401  (autouse in this module)

import dataclasses

import pytest
import torch
import triton.language as tl

from lab.engine.attention.decode import gqa_decode_attention_torch, mla_decode_attention_torch
from lab.engine.attention.reference import paged_attention
from lab.engine.kv_quant import QuantizedCache, dequantize_rows, kv_storage_dtype, write_rows
from tests.engine.kv8_fixtures import clone_cache, model_step_outputs_8bit, quantized_like
from tests.engine.paged_fixtures import SMALL_QWEN, random_caches, random_decode_meta, random_step_meta

KV_DTYPES = ["fp8", "int8"]
DECODE_BLOCK = 16 if ON_GPU else 8
NUM_BLOCKS = 40
TOL = dict(atol=1e-4, rtol=1e-4)  # float32 on both sides, the same codes: only summation order and scale folding


def _empty(shape: tuple[int, ...], groups: tuple[int, ...], kv: str, num_blocks=6, block_size=4) -> QuantizedCache:
    data = torch.zeros(num_blocks, block_size, *shape, device=DEVICE).to(kv_storage_dtype(kv))
    scale = torch.zeros(num_blocks, block_size, *shape[:-1], len(groups), device=DEVICE)
    return QuantizedCache(data, scale, groups, torch.float32)


def assert_same_coding(got: QuantizedCache, want: QuantizedCache) -> None:
    torch.testing.assert_close(got.scale, want.scale, atol=0, rtol=2e-6)
    if not ON_GPU:
        assert torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8))
        return
    a = dequantize_rows(got.data, got.scale, got.groups, torch.float32)
    b = dequantize_rows(want.data, want.scale, want.groups, torch.float32)
    assert (got.data.view(torch.uint8) != want.data.view(torch.uint8)).float().mean() < 0.01
    step = (want.scale.amax(), 0.0) if got.data.dtype == torch.int8 else (want.scale.amax() * 2.0**-9, 2.0**-3)
    torch.testing.assert_close(a, b, atol=float(step[0]) * 1.001, rtol=step[1])


@pytest.fixture(autouse=True, scope="module")
def interpreter_e4m3_rounding():
    """float32 -> e4m3 in the interpreter as the GPU converts: round to nearest even, saturating at 448."""
    if ON_GPU:
        yield
        return
    import numpy as np
    from triton.runtime import interpreter

    original = interpreter._convert_float

    def convert(input, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.float32 and output_dtype == tl.float8e4nv:
            x = torch.from_numpy(np.ascontiguousarray(input, dtype=np.float32)).clamp(-448.0, 448.0)
            return x.to(torch.float8_e4m3fn).view(torch.uint8).numpy().reshape(input.shape)
        return original(input, input_dtype, output_dtype, rounding_mode)

    interpreter._convert_float = convert
    yield
    interpreter._convert_float = original


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("shape,groups", [((2, 32), (32,)), ((3, 16), (16,)), ((40,), (32, 8)), ((24,), (16, 8))])
def test_write_kv_triton_codes_as_write_rows(kv, shape, groups) -> None:
    from lab.engine.kernels.kv_write import write_kv_triton

    g = torch.Generator().manual_seed(sum(shape))
    values = (torch.randn(5, *shape, generator=g) * torch.logspace(-2, 1, shape[-1])).to(DEVICE)  # mixed magnitudes
    slots = torch.tensor([5, 0, -1, 23, 11], device=DEVICE)  # -1: a padding row writes nothing
    got, want = _empty(shape, groups, kv), _empty(shape, groups, kv)
    write_kv_triton(got, slots, values)
    real = slots >= 0
    write_rows(want, slots[real], values[real])
    assert_same_coding(got, want)


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_kv_write_8bit_equals_rotate_then_write_rows(kv, interleaved) -> None:
    from lab.engine.kernels.rope_kv_write import rope_kv_write_triton
    from lab.engine.models.rope import RotaryEmbedding

    tokens, heads, kv_heads, dim = 5, 4, 2, 32
    g = torch.Generator().manual_seed(dim)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=g).to(DEVICE)
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k, v = (t.view(tokens, -1, dim) for t in (q, k, v))  # strided views, as in LlamaAttention
    rot = RotaryEmbedding(dim, 10000.0, None, interleaved).to(DEVICE)(torch.tensor([0, 3, 9, 17, 2], device=DEVICE))
    slots = torch.tensor([5, 0, -1, 23, 11], device=DEVICE)
    got = [_empty((kv_heads, dim), (dim,), kv) for _ in range(2)]
    want = [_empty((kv_heads, dim), (dim,), kv) for _ in range(2)]
    real = slots >= 0
    write_rows(want[0], slots[real], rot.apply(k)[real])
    write_rows(want[1], slots[real], v[real])
    got_q = rope_kv_write_triton(q, k, v, rot.cos, rot.sin, interleaved, got[0], got[1], slots)
    torch.testing.assert_close(got_q, rot.apply(q), atol=1e-6, rtol=1e-6)
    assert_same_coding(got[0], want[0])
    assert_same_coding(got[1], want[1])


@pytest.mark.parametrize("kv", KV_DTYPES)
def test_mla_rope_latent_write_8bit_equals_norm_rotate_then_write_rows(kv) -> None:
    from lab.engine.kernels.mla_latent_write import mla_rope_latent_write_triton
    from lab.engine.models.layers import RMSNorm
    from lab.engine.models.rope import RotaryEmbedding

    tokens, heads, rank, rope = 4, 3, 32, 16
    g = torch.Generator().manual_seed(7)
    q_pe = torch.randn(tokens, heads, rope, generator=g).to(DEVICE)
    kv_a = torch.randn(tokens, rank + rope, generator=g).to(DEVICE)
    kv_a[:, rank:] *= 0.01  # k_pe far smaller than c_kv: its own scale keeps it
    norm = RMSNorm(rank, 1e-6).to(DEVICE)
    norm.weight.data = (torch.randn(rank, generator=g) * 0.2 + 1.0).to(DEVICE)
    rot = RotaryEmbedding(rope, 10000.0, None, True).to(DEVICE)(torch.tensor([0, 4, 33, 7], device=DEVICE))
    slots = torch.tensor([2, -1, 19, 8], device=DEVICE)
    got, want = _empty((rank + rope,), (rank, rope), kv), _empty((rank + rope,), (rank, rope), kv)
    c_kv, k_pe = kv_a.split([rank, rope], dim=-1)
    row = torch.cat([norm(c_kv), rot.apply(k_pe.unsqueeze(1)).squeeze(1)], dim=-1)
    real = slots >= 0
    write_rows(want, slots[real], row[real])
    mla_rope_latent_write_triton(q_pe, kv_a, norm.weight, 1e-6, rot.cos, rot.sin, True, got, slots)
    assert_same_coding(got, want)
    assert (got.scale[..., 1].amax() < 0.1 * got.scale[..., 0].amax())  # two parts, two scales


@pytest.mark.parametrize("kv", KV_DTYPES)
def test_gqa_decode_kernel_on_8bit_cache_equals_torch(kv) -> None:
    from lab.engine.kernels.paged_decode import GQA_DECODE, gqa_decode_triton

    heads, kv_heads, dim = 8, 2, 32
    seq_lens = [1, 17, 64, 33, 5]
    meta = random_decode_meta(seq_lens, DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=3)
    k, v = (quantized_like(c, kv) for c in random_caches([(kv_heads, dim)] * 2, NUM_BLOCKS, DECODE_BLOCK,
                                                          torch.float32, DEVICE, seed=3))
    q = torch.randn(len(seq_lens), heads, dim, device=DEVICE)
    want = gqa_decode_attention_torch(q, k, v, meta, 0.2)
    for config in (GQA_DECODE, dataclasses.replace(GQA_DECODE, pages_per_tile=1, min_pages_per_split=1, max_splits=3)):
        got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, 0.2, config)
        torch.testing.assert_close(got, want, **TOL)
    meta.seq_lens_tensor[0] = 0  # a padding row of a graph batch: zeros
    got = gqa_decode_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, 0.2)
    assert torch.equal(got[0], torch.zeros_like(got[0]))


@pytest.mark.parametrize("kv", KV_DTYPES)
def test_mla_decode_kernel_on_8bit_cache_equals_torch(kv) -> None:
    from lab.engine.kernels.mla_decode import mla_decode_triton

    heads, rank, rope = 4, 32, 16
    seq_lens = [3, 40, 17]
    meta = random_decode_meta(seq_lens, DECODE_BLOCK, NUM_BLOCKS, DEVICE, seed=4)
    (plain,) = random_caches([(rank + rope,)], NUM_BLOCKS, DECODE_BLOCK, torch.float32, DEVICE, seed=4)
    plain[..., rank:] *= 0.05  # k_pe on another scale than c_kv
    cache = quantized_like(plain, kv, (rank, rope))
    q = torch.randn(len(seq_lens), heads, rank + rope, device=DEVICE)
    want = mla_decode_attention_torch(q, cache, meta, rank, 0.15)
    got = mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, 0.15)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("heads,kv_heads,dim,block_size", [(6, 2, 32, 4), (4, 4, 16, 16)])
def test_varlen_gqa_on_8bit_cache_equals_paged_attention(kv, heads, kv_heads, dim, block_size) -> None:
    from lab.engine.kernels.varlen_attention import gqa_varlen_triton

    query_lens, seq_lens = [1, 5, 1, 20, 3], [9, 5, 40, 37, 3]
    meta = random_step_meta(query_lens, seq_lens, block_size, NUM_BLOCKS * 4, DEVICE, seed=block_size)
    k, v = (quantized_like(c, kv) for c in random_caches([(kv_heads, dim)] * 2, NUM_BLOCKS * 4, block_size,
                                                          torch.float32, DEVICE, seed=heads))
    q = torch.randn(sum(query_lens), heads, dim, device=DEVICE)
    want = paged_attention(q, k, v, meta, dim**-0.5)
    got = gqa_varlen_triton(q, k, v, meta.block_tables_tensor, meta.seq_lens_tensor, meta.query_start_loc_tensor,
                            dim**-0.5, meta.max_query_len)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("model,overrides", [
    ("tiny", {"num_hidden_layers": 1, "vocab_size": 512}),
    ("r1-distill-qwen-1.5b", dict(SMALL_QWEN, num_hidden_layers=1)),
])
def test_model_mixed_step_on_8bit_cache_triton_equals_reference(kv, model, overrides) -> None:
    step = ([1, 4, 6], [9, 4, 10])  # a decode row, a prefill from 0, a chunk over 4 cached tokens
    outs, written = model_step_outputs_8bit(model, overrides, step, DECODE_BLOCK, kv, ("reference", "triton"),
                                            DEVICE, num_blocks=32)
    torch.testing.assert_close(outs["triton"], outs["reference"], **TOL)
    for ref, tri in zip(written["reference"][0], written["triton"][0]):
        assert_same_coding(tri, ref)


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("model,overrides", [
    ("tiny", {"num_hidden_layers": 1, "vocab_size": 512}),
    ("r1-distill-qwen-1.5b", dict(SMALL_QWEN, num_hidden_layers=1)),
])
def test_fused_decode_step_on_8bit_cache_equals_reference(kv, model, overrides) -> None:
    """Fused RoPE + cache write (GQA) / norm + RoPE + latent write (MLA) on "triton" vs the oracle's writes."""
    from lab.engine.loader import load_model

    torch.manual_seed(0)
    module = load_model(model, torch.float32, DEVICE, hf_overrides=overrides).module
    module.model.rotary_emb.fused = True  # only the rotation: the fused kernels under test
    outs, written = model_step_outputs_8bit(model, overrides, ([1, 1, 1], [9, 1, 20]), DECODE_BLOCK, kv,
                                            ("reference", "triton"), DEVICE, num_blocks=32, model=module)
    torch.testing.assert_close(outs["triton"], outs["reference"], **TOL)
    for ref, tri in zip(written["reference"][0], written["triton"][0]):
        assert_same_coding(tri, ref)


def test_clone_cache_is_a_copy() -> None:
    """The fixture the step tests rest on: each backend gets its own codes and scales."""
    cache = quantized_like(torch.randn(2, 4, 8, device=DEVICE), "int8")
    copy = clone_cache(cache)
    copy.data.zero_()
    assert cache.data.abs().sum() > 0
