"""8-bit weight GEMMs on a GPU at real shapes and bf16 (skipped without CUDA; the interpreter tests cover the math
on the CPU): the Triton W8A8 kernel and block-wise `_scaled_mm` (where the probe finds it) vs the float32 oracle,
the int8 GEMV vs its oracle, and an FP8 / int8 engine's first-step logits vs its own plain (dequantized) path."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SHAPES = [(2048, 1536), (1536, 1536), (17920, 1536), (1536, 8960)]  # R1-Distill-Qwen-1.5B: qkv, o, gate_up, down


def _fp8_capable() -> bool:
    return torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.parametrize("m", [1, 4, 16, 100, 512])
@pytest.mark.parametrize("n,k", SHAPES)
def test_fp8_backends_equal_the_oracle(m, n, k) -> None:
    if not _fp8_capable():
        pytest.skip("fp8 tensor cores need sm >= 8.9")
    from lab.engine.fp8 import quantize_block_fp8, w8a8_block_matmul_reference
    from lab.engine.fp8_gemm import fp8_linear, scaled_mm_layout
    from lab.engine.kernels.fp8_gemm import quantize_act_fp8_triton

    g = torch.Generator(device="cuda").manual_seed(m + n)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.bfloat16)
    w_fp8, w_scale = quantize_block_fp8(torch.randn(n, k, generator=g, device="cuda") * 0.02)
    bias = torch.randn(n, generator=g, device="cuda", dtype=torch.bfloat16)
    x_fp8, x_scale = quantize_act_fp8_triton(x, 128)
    want = w8a8_block_matmul_reference(x_fp8, x_scale, w_fp8, w_scale, (128, 128), bias)
    backends = ["triton"] + (["scaled_mm"] if scaled_mm_layout(x.device) is not None else [])
    for backend in backends:
        got = fp8_linear(x, w_fp8, w_scale, (128, 128), bias, backend).float()
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item(), msg=backend)


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("n,k", SHAPES)
def test_int8_gemv_equals_its_oracle_in_bf16(m, n, k) -> None:
    import torch.nn.functional as F

    from lab.engine.int8 import dequantize_int8, quantize_int8
    from lab.engine.kernels.int8_gemv import int8_gemv

    g = torch.Generator(device="cuda").manual_seed(m * n)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.bfloat16)
    q, scale = quantize_int8(torch.randn(n, k, generator=g, device="cuda") * 0.02)
    want = F.linear(x.float(), dequantize_int8(q, scale))
    torch.testing.assert_close(int8_gemv(x, q, scale).float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


@pytest.mark.parametrize("quantization", ["fp8", "int8"])
def test_8bit_engine_fast_path_stays_with_its_plain_path(quantization) -> None:
    if quantization == "fp8" and not _fp8_capable():
        pytest.skip("fp8 tensor cores need sm >= 8.9")
    from lab.engine import LLM, SamplingParams
    from lab.engine.fidelity import logits_cosine

    prompts = [[3, 17, 250, 9, 1000], [42] * 7, [5, 6, 7]]
    args = dict(hf_overrides={"num_hidden_layers": 4}, num_gpu_blocks=64, quantization=quantization)
    logits = {}
    for fused in (True, False):
        llm = LLM("r1-distill-qwen-1.5b", fused_ops=fused, enforce_eager=True, **args)
        captured = []
        original = llm.engine.model.compute_logits
        llm.engine.model.compute_logits = lambda h: captured.append(original(h).clone()) or captured[-1]
        llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True))
        logits[fused] = captured[0]
    cosine = logits_cosine(logits[False], logits[True])
    assert (cosine > 0.99).all(), cosine
