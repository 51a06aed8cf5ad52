"""Batch-1 decode fusions at the real shapes in bf16, on the GPU (skipped without CUDA).

The add + RMSNorm in the qkv / gate_up GEMV prologue against the norm kernel then the GEMV (the
same float32 math: equal to bf16 rounding), MLA's per-head absorbed products against torch.bmm,
and the MoE router's GEMV against F.linear in float32. The interpreter tests hold the exact
float32 contracts; whole decode steps are test_kernels_gpu.py's.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _bf16(*shape, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16)


@pytest.mark.parametrize("hidden,qkv_rows,inter", [(1536, 2048, 8960), (3584, 4608, 18944)])  # 1.5B, 7B
def test_norm_prologue_gemvs_equal_norm_kernel_then_gemv(hidden, qkv_rows, inter) -> None:
    from lab.engine.kernels.fused_ops import add_rms_norm_triton
    from lab.engine.kernels.gate_up_silu import gate_up_silu, gate_up_silu_add_rms_norm
    from lab.engine.kernels.gemv import gemv, gemv_add_rms_norm

    torch.manual_seed(0)
    x, residual = _bf16(1, hidden), _bf16(1, hidden, scale=4.0)
    nw = _bf16(hidden, scale=0.1) + 1
    w, b = _bf16(qkv_rows, hidden, scale=0.02), _bf16(qkv_rows)
    w13 = _bf16(2 * inter, hidden, scale=0.02)
    want_norm, want_res = add_rms_norm_triton(x, residual.clone(), nw, 1e-6)
    y, res = gemv_add_rms_norm(x, residual, nw, 1e-6, w, b)
    assert torch.equal(res, want_res)
    torch.testing.assert_close(y, gemv(want_norm, w, b), atol=1e-2, rtol=1e-2)
    act, res2 = gate_up_silu_add_rms_norm(x, residual, nw, 1e-6, w13)
    assert torch.equal(res2, want_res)
    torch.testing.assert_close(act, gate_up_silu(want_norm, w13), atol=1e-2, rtol=1e-2)
    y0, res0 = gemv_add_rms_norm(x, None, nw, 1e-6, w, b)  # the first layer: no residual yet
    assert res0 is x
    torch.testing.assert_close(y0, gemv(torch.empty_like(x).copy_(_plain_norm(x, nw)), w, b), atol=1e-2, rtol=1e-2)


def _plain_norm(x, weight, eps=1e-6):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@pytest.mark.parametrize("tokens", [1, 5, 16])
def test_head_gemm_bf16_equals_bmm(tokens) -> None:
    """V2-Lite's absorbed shapes: q_nope (T, 16, 128) @ W_UK (16, 128, 512), latent (T, 16, 512) @ W_UV^T."""
    from lab.engine.kernels.head_gemm import head_gemm

    torch.manual_seed(tokens)
    q = _bf16(tokens, 16, 192)[..., :128]
    w_uk, w_uv_t = _bf16(16, 128, 512, scale=0.05), _bf16(16, 512, 128, scale=0.05)
    want = torch.bmm(q.transpose(0, 1), w_uk).transpose(0, 1)
    buf = torch.zeros(tokens, 16, 576, device="cuda", dtype=torch.bfloat16)
    head_gemm(q, w_uk, out=buf[..., :512])
    torch.testing.assert_close(buf[..., :512].float(), want.float(), atol=2e-2, rtol=2e-2)
    lat = _bf16(tokens, 16, 512)
    torch.testing.assert_close(head_gemm(lat, w_uv_t).float(), torch.bmm(lat.transpose(0, 1), w_uv_t).transpose(0, 1).float(),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("tokens", [1, 8])
def test_router_gemv_equals_float32_linear(tokens) -> None:
    from lab.engine.kernels.gemv import gemv
    from lab.engine.loader import load_model

    model = load_model("deepseek-v2-lite", torch.bfloat16, "cuda", hf_overrides={"num_hidden_layers": 2}).module
    gate = model.model.layers[1].mlp.gate
    assert gate.weight.dtype == torch.float32
    x = _bf16(tokens, gate.weight.shape[1])
    gate.fused = False
    want_w, want_ids = gate(x)
    gate.fused = True
    got_w, got_ids = gate(x)
    logits = F.linear(x.float(), gate.weight)
    torch.testing.assert_close(gemv(x, gate.weight, out_dtype=torch.float32), logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(got_ids.sort(-1).values, want_ids.sort(-1).values)
    torch.testing.assert_close(got_w.sort(-1).values, want_w.sort(-1).values, atol=1e-5, rtol=1e-4)
