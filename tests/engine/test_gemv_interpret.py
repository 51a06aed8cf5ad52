"""The skinny-GEMM kernel and fused add+RMSNorm vs torch, through Triton's interpreter on the CPU.

float32 and small shapes (the interpreter is numpy, and its tl.dot gives garbage for bf16 inputs
in triton 3.6); ragged N and K, bias, split-K, both the CUDA-core (M == 1) and the tl.dot (M >= 2)
paths. bf16 on the real shapes is test_kernels_gpu.py's.
The residual-carrying decoder (DecoderStack.fused) must give the plain path's hidden states.
"""
from tests.engine.triton_interpret import DEVICE  # first: sets TRITON_INTERPRET=1 without CUDA

import pytest
import torch
import torch.nn.functional as F

from lab.engine.kernels.fused_ops import add_rms_norm_triton
from lab.engine.kernels.gemv import MAX_M, TUNED, GemvConfig, choose_config, gemv, m_class
from lab.engine.models.layers import GEMV_MAX_ROWS, RMSNorm

ATOL = 1e-4  # float32, K <= 200: only the summation order differs


def _problem(m, n, k, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(DEVICE)
    w = torch.randn(n, k, generator=g).to(DEVICE)
    b = torch.randn(n, generator=g).to(DEVICE) if bias else None
    return x, w, b


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("n,k,cfg", [
    (37, 100, GemvConfig(block_n=16, block_k=32)),  # N and K both ragged
    (50, 96, GemvConfig(block_n=16, block_k=32, split_k=3)),  # split-K with K an exact multiple
    (40, 200, GemvConfig(block_n=32, block_k=64, split_k=2)),  # split-K, ragged last split
])
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_equals_linear(m, n, k, cfg, bias) -> None:
    x, w, b = _problem(m, n, k, bias)
    torch.testing.assert_close(gemv(x, w, b, config=cfg), F.linear(x, w, b), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("n,k", [(7, 48), (9, 1100)])
def test_gemv_default_config_and_small_blocks(n, k) -> None:
    """M == 1 with the heuristic (tiny N: BLOCK_N 1 and split-K when K allows) and a row-strided x."""
    x, w, b = _problem(2, n, k, True, seed=1)
    x1 = x[1:2]  # a view: row stride k
    cfg = choose_config(1, n, k)
    assert cfg.block_n == 1 and (cfg.split_k > 1) == (k > 512)  # < 132 rows: K is split
    torch.testing.assert_close(gemv(x1, w, b), F.linear(x1, w, b), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(gemv(x1, w, b, config=GemvConfig(block_n=1, block_k=64)), F.linear(x1, w, b),
                               atol=ATOL, rtol=ATOL)


def test_gemv_float32_logits_and_limits() -> None:
    x, w, _ = _problem(2, 24, 64, False, seed=2)
    out = gemv(x, w, out_dtype=torch.float32, config=GemvConfig(block_n=16, block_k=64))
    assert out.dtype == torch.float32 and out.shape == (2, 24)
    with pytest.raises(ValueError):
        gemv(torch.zeros(MAX_M + 1, 64, device=DEVICE), w)
    assert GEMV_MAX_ROWS == MAX_M  # layers.Linear's dispatch bound is the kernel's


def test_heuristic_fills_the_sms() -> None:
    """Every real decode shape gets >= 2 programs per SM of an H100/H200 and >= 16 rows for tl.dot."""
    shapes = [(2048, 1536), (1536, 1536), (17920, 1536), (1536, 8960), (151936, 1536), (3072, 2048),
              (576, 2048), (4096, 512), (2048, 2048), (21888, 2048), (2048, 10944), (5632, 2048), (2048, 2816)]
    for m in (1, 4, 16):
        for n, k in shapes:
            if (m_class(m), n, k) in TUNED:
                continue  # measured winners replace the heuristic: this test is about the heuristic
            cfg = choose_config(m, n, k, num_sms=132)
            programs = -(-n // cfg.block_n) * min(cfg.split_k, -(-k // cfg.block_k))
            assert programs >= 264 or cfg.split_k == -(-k // cfg.block_k), (m, n, k, cfg)
            assert m == 1 or cfg.block_n >= 16
            assert cfg.block_n * cfg.block_k <= 8192


@pytest.mark.parametrize("hidden", [64, 100])
def test_add_rms_norm_equals_add_then_norm(hidden) -> None:
    g = torch.Generator().manual_seed(3)
    norm = RMSNorm(hidden, 1e-6)
    norm.weight.data = torch.randn(hidden, generator=g) * 0.2 + 1.0
    x = torch.randn(5, 2 * hidden, generator=g)[:, :hidden]  # a row-strided view, as a GEMM slice
    residual = torch.randn(5, hidden, generator=g)
    want_sum = residual + x
    want = norm(want_sum)
    got, got_sum = add_rms_norm_triton(x.to(DEVICE), residual := residual.to(DEVICE), norm.weight.to(DEVICE), 1e-6)
    assert got_sum is residual  # updated in place
    torch.testing.assert_close(got_sum.cpu(), want_sum, atol=0, rtol=0)
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [64, 100])  # 100: the one K step is wider than the row (masked)
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_norm_prologue_gemvs_equal_norm_then_gemv(k, with_residual, bias) -> None:
    """gemv_add_rms_norm / gate_up_silu_add_rms_norm: the add + RMSNorm in the GEMV's prologue gives
    RMSNorm(x + residual) @ W^T (and SwiGLU's first half) and the new residual, the old one untouched."""
    from lab.engine.kernels.gate_up_silu import gate_up_silu, gate_up_silu_add_rms_norm
    from lab.engine.kernels.gemv import gemv_add_rms_norm

    g = torch.Generator().manual_seed(k)
    norm = RMSNorm(k, 1e-6)
    norm.weight.data = torch.randn(k, generator=g) * 0.2 + 1.0
    x, w, b = _problem(1, 37, k, bias, seed=k)
    residual = torch.randn(1, k, generator=g).to(DEVICE)
    before = residual.clone()
    h = residual + x if with_residual else x
    nw = norm.weight.to(DEVICE)
    y, new_res = gemv_add_rms_norm(x, residual if with_residual else None, nw, 1e-6, w, b)
    torch.testing.assert_close(y, F.linear(norm.to(DEVICE)(h), w, b), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(new_res, h, atol=0, rtol=0)
    assert torch.equal(residual, before)
    if with_residual:
        w13 = torch.randn(2 * 19, k, generator=g).to(DEVICE) * 0.3
        b13 = torch.randn(2 * 19, generator=g).to(DEVICE) if bias else None
        act, res2 = gate_up_silu_add_rms_norm(x, residual, nw, 1e-6, w13, b13)
        torch.testing.assert_close(act, gate_up_silu(norm.to(DEVICE)(h), w13, b13), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(res2, h, atol=0, rtol=0)


def test_norm_prologue_rejects_what_it_cannot_fuse() -> None:
    from lab.engine.kernels.gemv import NORM_MAX_K, gemv_add_rms_norm
    from lab.engine.models.base import NORM_PROLOGUE_MAX_K

    assert NORM_PROLOGUE_MAX_K == NORM_MAX_K  # the model's test mirrors the kernel's limit (no triton on CPU)
    nw = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="one row"):
        gemv_add_rms_norm(torch.zeros(2, 8, device=DEVICE), None, nw, 1e-6, torch.zeros(4, 8, device=DEVICE))
    with pytest.raises(ValueError, match="one row"):
        gemv_add_rms_norm(torch.zeros(1, 8, device=DEVICE), torch.zeros(1, 9, device=DEVICE), nw, 1e-6,
                          torch.zeros(4, 8, device=DEVICE))


@pytest.mark.parametrize("kind", ["qwen2", "deepseek_v2"])
def test_residual_stream_decoder_matches_plain(kind, tmp_path) -> None:
    """DecoderStack.fused (residual carried, adds inside the norms): torch norms give the plain path's
    hidden states bit for bit; the Triton kernels (interpreted) to float32 rounding."""
    from lab.engine.loader import load_model
    from tests.engine.hf_fixtures import make_tiny_checkpoint
    from tests.engine.test_models import PagedRunner

    model = load_model(make_tiny_checkpoint(kind, tmp_path / "ckpt"), dtype=torch.float32, device="cpu").module
    prompts = {"a": list(range(3, 8)), "b": list(range(20, 23))}
    plain = PagedRunner(model).step(prompts)
    model.model.fused = True
    carried = PagedRunner(model).step(prompts)
    for sid in prompts:
        assert torch.equal(carried[sid], plain[sid])
    if DEVICE == "cpu":  # the interpreted add+norm kernels on CPU tensors (other kernels have their own tests)
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.fused = True
        fused = PagedRunner(model).step(prompts)
        for sid in prompts:
            torch.testing.assert_close(fused[sid], plain[sid], atol=1e-4, rtol=1e-4)
