"""Decode fusions vs their unfused torch paths, through Triton's interpreter on the CPU (float32).

gate_up + SiLU-mul in one GEMV (`kernels/gate_up_silu.py`) against silu_and_mul(F.linear(...)):
ragged I and K, bias, the CUDA-core (M == 1) and tl.dot (M >= 2) paths. RoPE + KV write in one
kernel (`kernels/rope_kv_write.py`) against Rotation.apply + write_to_cache, padding slots and
strided q/k/v views included; and a whole small Qwen decode step with the fused kernel on the
"triton" backend against the "reference" backend (hidden states and the caches it wrote).
bf16 at the real shapes is test_kernels_gpu.py's.
"""
from __future__ import annotations

from tests.engine.triton_interpret import DEVICE, ON_GPU  # first: sets TRITON_INTERPRET=1 without CUDA
from tests.engine.triton_interpret import interpreter_scalar_index  # noqa: F401  (autouse in this module)

import pytest
import torch
import torch.nn.functional as F

from lab.engine.attention.reference import write_to_cache
from lab.engine.kernels.gate_up_silu import TUNED, GateUpConfig, choose_gate_up_config, gate_up_silu
from lab.engine.kernels.gemv import choose_config, m_class
from lab.engine.kernels.rope_kv_write import rope_kv_write_triton
from lab.engine.models.layers import silu_and_mul
from lab.engine.models.rope import RotaryEmbedding

ATOL = 1e-4  # float32, K <= 200: only the summation order differs


def _gate_up_problem(m, i, k, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(DEVICE)
    w = torch.randn(2 * i, k, generator=g).to(DEVICE) * 0.3
    b = torch.randn(2 * i, generator=g).to(DEVICE) if bias else None
    return x, w, b


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("i,k,cfg", [
    (37, 100, GateUpConfig(block_n=16, block_k=32)),  # I and K both ragged
    (40, 96, GateUpConfig(block_n=16, block_k=32)),  # K an exact multiple: no K mask
    (24, 200, GateUpConfig(block_n=32, block_k=64)),  # one row block, masked rows
])
@pytest.mark.parametrize("bias", [False, True])
def test_gate_up_silu_equals_linear_then_silu_mul(m, i, k, cfg, bias) -> None:
    x, w, b = _gate_up_problem(m, i, k, bias)
    want = silu_and_mul(F.linear(x, w, b))
    torch.testing.assert_close(gate_up_silu(x, w, b, config=cfg), want, atol=ATOL, rtol=ATOL)


def test_gate_up_silu_default_config_strided_row() -> None:
    """M == 1 with the heuristic (tiny I: one row per program) and x a row of a larger tensor."""
    x, w, b = _gate_up_problem(2, 9, 300, True, seed=1)
    x1 = x[1:2]  # a view: row stride 300
    torch.testing.assert_close(gate_up_silu(x1, w, b), silu_and_mul(F.linear(x1, w, b)), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(gate_up_silu(x1, w, b, config=GateUpConfig(block_n=1, block_k=64)),
                               silu_and_mul(F.linear(x1, w, b)), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("i,k", [(8960, 1536), (2816, 2048), (10944, 2048)])  # qwen-1.5B, V2-Lite shared, dense
def test_gate_up_config_reads_what_the_gemv_read(i, k) -> None:
    """Half the rows per program, both halves read: the same W bytes per program as the (2I, K) GEMV."""
    for m in (1, 4, 16):
        if (m_class(m), i, k) in TUNED:
            continue  # measured winners replace the derivation: this test is about the derivation
        base, cfg = choose_config(m, 2 * i, k), choose_gate_up_config(m, i, k)
        assert 2 * cfg.block_n * cfg.block_k == base.block_n * base.block_k or (m > 1 and cfg.block_n == 16)
        assert m == 1 or cfg.block_n >= 16


def test_gate_up_silu_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        gate_up_silu(torch.zeros(17, 8, device=DEVICE), torch.zeros(6, 8, device=DEVICE))  # M > 16
    with pytest.raises(ValueError):
        gate_up_silu(torch.zeros(1, 8, device=DEVICE), torch.zeros(5, 8, device=DEVICE))  # odd 2I


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 32), (6, 1, 16), (3, 3, 8)])
def test_rope_kv_write_equals_rotate_then_write(interleaved, heads, kv_heads, dim) -> None:
    tokens, num_blocks, block_size = 5, 6, 4
    g = torch.Generator().manual_seed(heads * dim)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=g).to(DEVICE)  # the fused GEMM's output
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k, v = (t.view(tokens, -1, dim) for t in (q, k, v))  # strided views, as in LlamaAttention
    rot = RotaryEmbedding(dim, 10000.0, None, interleaved).to(DEVICE)(torch.tensor([0, 3, 9, 17, 2], device=DEVICE))
    caches = [torch.randn(num_blocks, block_size, kv_heads, dim, generator=g).to(DEVICE) for _ in range(2)]
    slots = torch.tensor([5, 0, -1, 23, 11], device=DEVICE)  # -1: a padding row writes nothing
    want_k, want_v = (c.clone() for c in caches)
    real = slots >= 0
    write_to_cache(want_k, slots[real], rot.apply(k)[real])
    write_to_cache(want_v, slots[real], v[real])
    got_q = rope_kv_write_triton(q, k, v, rot.cos, rot.sin, interleaved, caches[0], caches[1], slots)
    torch.testing.assert_close(got_q, rot.apply(q), atol=1e-6, rtol=1e-6)
    assert got_q.is_contiguous() and got_q.shape == (tokens, heads, dim)
    torch.testing.assert_close(caches[0], want_k, atol=1e-6, rtol=1e-6)
    assert torch.equal(caches[1], want_v)  # v is copied, not computed


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("heads,rank,rope", [(4, 32, 16), (3, 24, 8)])  # 24: a rank that is no power of two
def test_mla_rope_latent_write_equals_norm_rotate_then_write(interleaved, heads, rank, rope) -> None:
    from lab.engine.kernels.mla_latent_write import mla_rope_latent_write_triton
    from lab.engine.models.layers import RMSNorm

    tokens, num_blocks, block_size = 4, 5, 4
    g = torch.Generator().manual_seed(rank + rope)
    q = torch.randn(tokens, heads, 40 + rope, generator=g).to(DEVICE)  # (T, H, nope + rope): q_pe is a strided slice
    q_pe = q[..., 40:]
    kv_a = torch.randn(tokens, 3 + rank + rope, generator=g).to(DEVICE)[:, 3:]  # a row-strided view
    norm = RMSNorm(rank, 1e-6).to(DEVICE)
    norm.weight.data = (torch.randn(rank, generator=g) * 0.2 + 1.0).to(DEVICE)
    rot = RotaryEmbedding(rope, 10000.0, None, interleaved).to(DEVICE)(torch.tensor([0, 4, 33, 7], device=DEVICE))
    cache = torch.randn(num_blocks, block_size, rank + rope, generator=g).to(DEVICE)
    slots = torch.tensor([2, -1, 19, 8], device=DEVICE)  # -1: a padding row writes nothing
    want = cache.clone()
    c_kv, k_pe = kv_a.split([rank, rope], dim=-1)
    row = torch.cat([norm(c_kv), rot.apply(k_pe.unsqueeze(1)).squeeze(1)], dim=-1)
    real = slots >= 0
    write_to_cache(want, slots[real], row[real])
    got_q = mla_rope_latent_write_triton(q_pe, kv_a, norm.weight, 1e-6, rot.cos, rot.sin, interleaved, cache, slots)
    torch.testing.assert_close(got_q, rot.apply(q_pe), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cache, want, atol=1e-5, rtol=1e-5)


def test_mla_rope_latent_write_into_a_query_slice() -> None:
    """q_out: the rotated q_pe lands in the rope columns of a wider buffer, the other columns untouched."""
    from lab.engine.kernels.mla_latent_write import mla_rope_latent_write_triton

    tokens, heads, rank, rope = 3, 2, 16, 8
    g = torch.Generator().manual_seed(5)
    q_pe = torch.randn(tokens, heads, rope, generator=g).to(DEVICE)
    kv_a = torch.randn(tokens, rank + rope, generator=g).to(DEVICE)
    rot = RotaryEmbedding(rope, 10000.0, None, False).to(DEVICE)(torch.tensor([1, 5, 2], device=DEVICE))
    cache = torch.zeros(4, 4, rank + rope, device=DEVICE)
    q = torch.full((tokens, heads, 32 + rope), 7.0, device=DEVICE)
    got = mla_rope_latent_write_triton(q_pe, kv_a, torch.ones(rank, device=DEVICE), 1e-6, rot.cos, rot.sin, False,
                                       cache, torch.tensor([0, 5, 9], device=DEVICE), q_out=q[..., 32:])
    assert got.data_ptr() == q[..., 32:].data_ptr()
    torch.testing.assert_close(q[..., 32:], rot.apply(q_pe), atol=1e-6, rtol=1e-6)
    assert torch.equal(q[..., :32], torch.full((tokens, heads, 32), 7.0, device=DEVICE))
    with pytest.raises(ValueError, match="q_out"):
        mla_rope_latent_write_triton(q_pe, kv_a, torch.ones(rank, device=DEVICE), 1e-6, rot.cos, rot.sin, False,
                                     cache, torch.tensor([0, 5, 9], device=DEVICE), q_out=q[..., :rope + 1])


@pytest.mark.parametrize("tokens,heads,k,n,block_n,block_k", [
    (1, 3, 32, 48, 16, 16),  # N and K exact multiples
    (5, 2, 40, 20, 16, 32),  # ragged K and N
    (16, 1, 24, 64, 64, 128),  # the most rows; one K step wider than K
])
def test_head_gemm_equals_bmm(tokens, heads, k, n, block_n, block_k) -> None:
    """Per-head products against torch.bmm, from a strided query slice into a slice of a wider buffer."""
    from lab.engine.kernels.head_gemm import head_gemm

    g = torch.Generator().manual_seed(tokens * 100 + k)
    q = torch.randn(tokens, heads, k + 8, generator=g).to(DEVICE)[..., :k]  # q_nope: a strided view
    w = torch.randn(heads, k, n, generator=g).to(DEVICE)
    want = torch.bmm(q.transpose(0, 1), w).transpose(0, 1)
    buf = torch.full((tokens, heads, n + 4), 3.0, device=DEVICE)
    got = head_gemm(q, w, out=buf[..., :n], block_n=block_n, block_k=block_k)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    assert torch.equal(buf[..., n:], torch.full((tokens, heads, 4), 3.0, device=DEVICE))  # the rest untouched
    torch.testing.assert_close(head_gemm(q, w, block_n=block_n, block_k=block_k), want, atol=ATOL, rtol=ATOL)


def test_head_gemm_rejects_bad_shapes() -> None:
    from lab.engine.kernels.head_gemm import head_gemm

    with pytest.raises(ValueError, match="head_gemm takes"):
        head_gemm(torch.zeros(17, 2, 8, device=DEVICE), torch.zeros(2, 8, 4, device=DEVICE))  # T > 16
    with pytest.raises(ValueError, match="head_gemm takes"):
        head_gemm(torch.zeros(1, 2, 8, device=DEVICE), torch.zeros(3, 8, 4, device=DEVICE))  # heads differ
    with pytest.raises(ValueError, match="out must be"):
        head_gemm(torch.zeros(1, 2, 8, device=DEVICE), torch.zeros(2, 8, 4, device=DEVICE),
                  out=torch.zeros(1, 2, 5, device=DEVICE))


def _decode_step_fused_vs_reference(preset: str, overrides: dict, takes_fused) -> None:
    """A pure-decode step of a 2-layer model (float32): the fused RoPE + cache write on "triton" (checked to be
    taken, by `takes_fused(model, rot, meta)`) vs the oracle loop, hidden states and the cache rows written."""
    from lab.engine.kv_cache import allocate_kv_cache
    from lab.engine.loader import load_model
    from tests.engine.paged_fixtures import random_step_meta

    torch.manual_seed(0)
    model = load_model(preset, torch.float32, DEVICE, hf_overrides=overrides).module
    model.model.rotary_emb.fused = True  # only the rotation: the other fused ops have their own tests
    block_size, num_blocks = (16 if ON_GPU else 8), 32  # compiled decode kernels need >= 16 (tl.dot's K)
    caches = [tuple(c.normal_() for c in layer)
              for layer in allocate_kv_cache(model.kv_cache_spec(torch.float32), num_blocks, block_size, torch.device(DEVICE))]
    seq_lens = [9, 1, 20]
    ids = torch.randint(2, 500, (3,), device=DEVICE)
    positions = torch.tensor([n - 1 for n in seq_lens], device=DEVICE)
    outs, written = {}, {}
    for backend in ("reference", "triton"):
        meta = random_step_meta([1, 1, 1], seq_lens, block_size, num_blocks, DEVICE, seed=7, backend=backend)
        rot = model.model.rotary_emb(positions)
        assert takes_fused(model, rot, meta) == (backend == "triton")
        written[backend] = [tuple(c.clone() for c in layer) for layer in caches]
        with torch.inference_mode():
            outs[backend] = model(ids, positions, written[backend], meta)
    torch.testing.assert_close(outs["triton"], outs["reference"], atol=1e-4, rtol=1e-4)
    for ref_layer, fused_layer in zip(written["reference"], written["triton"]):
        for ref, fused in zip(ref_layer, fused_layer):
            torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_qwen_decode_step_with_fused_rope_kv_write_equals_reference() -> None:
    from lab.engine.models.llama import takes_fused_rope_kv_write
    from tests.engine.paged_fixtures import SMALL_QWEN

    _decode_step_fused_vs_reference("r1-distill-qwen-1.5b", SMALL_QWEN,
                                    lambda model, rot, meta: takes_fused_rope_kv_write(rot, meta))


def test_mla_decode_step_with_fused_latent_write_equals_reference() -> None:
    """The tiny DeepSeek-V3-architecture model: the fused latent write, and (3 tokens <= 16) the absorbed
    query assembled in place and both absorbed products as per-head GEMMs (`kernels/head_gemm.py`)."""
    _decode_step_fused_vs_reference(
        "tiny", {"num_hidden_layers": 2, "vocab_size": 512},
        lambda model, rot, meta: model.model.layers[0].self_attn.takes_fused_latent_write(rot, meta))




def test_qwen_one_row_step_with_norms_in_gemv_equals_plain(monkeypatch) -> None:
    """A one-token decode step with each layer's add + RMSNorm inside the qkv and gate_up GEMVs
    (`DecoderLayer._forward_norms_in_gemv`, forced on: on a GPU it needs bf16) vs the plain path."""
    from lab.engine.kv_cache import allocate_kv_cache
    from lab.engine.loader import load_model
    from lab.engine.models.base import DecoderLayer
    from tests.engine.paged_fixtures import SMALL_QWEN, random_step_meta

    torch.manual_seed(0)
    model = load_model("r1-distill-qwen-1.5b", torch.float32, DEVICE, hf_overrides=SMALL_QWEN).module
    block_size, num_blocks = 8, 8
    caches = [tuple(c.normal_() for c in layer)
              for layer in allocate_kv_cache(model.kv_cache_spec(torch.float32), num_blocks, block_size, torch.device(DEVICE))]
    ids, positions = torch.tensor([17], device=DEVICE), torch.tensor([11], device=DEVICE)
    meta = random_step_meta([1], [12], block_size, num_blocks, DEVICE, seed=3, backend="reference")
    with torch.inference_mode():
        want = model(ids, positions, [tuple(c.clone() for c in layer) for layer in caches], meta)
        taken = []
        monkeypatch.setattr(DecoderLayer, "norms_in_gemv", lambda self, hidden: taken.append(1) or True)
        model.model.fused = True  # the residual-carrying decoder, whose one-row layers take the prologue path
        got = model(ids, positions, [tuple(c.clone() for c in layer) for layer in caches], meta)
    assert len(taken) == SMALL_QWEN["num_hidden_layers"]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
