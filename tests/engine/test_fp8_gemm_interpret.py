"""The FP8 W8A8 block-scaled GEMM and its activation quantization vs the float32 oracle of the same quantized
math (`fp8.w8a8_block_matmul_reference`), through Triton's interpreter on the CPU (float8 tensors pass straight
through: the interpreter's tl.dot multiplies e4m3 codes exactly; its float32 -> e4m3 cast has one known flaw,
handled where it shows). Small groups (16, 32) keep the interpreter fast;
the GPU runs group 128 (test_fp8_gemm_gpu.py). Also: Fp8Linear forced onto the kernel equals its plain path
to the activation rounding's error, and the dispatcher's choices on a CPU.
"""
from tests.engine.triton_interpret import DEVICE  # first: sets TRITON_INTERPRET=1 without CUDA

import pytest
import torch

from lab.engine.fp8 import FP8_E4M3_MAX, quantize_act_fp8, quantize_block_fp8, w8a8_block_matmul_reference
from lab.engine.kernels.fp8_gemm import Fp8GemmConfig, choose_fp8_config, quantize_act_fp8_triton, w8a8_block_matmul

ATOL = 1e-4  # float32 sums of exact fp8 products: only the order differs


def _problem(m, n, k, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=g) * scale).to(DEVICE)
    w = (torch.randn(n, k, generator=g) * 0.05).to(DEVICE)
    return x, w


@pytest.mark.parametrize("m,k,group", [(3, 64, 16), (5, 100, 32), (1, 16, 16)])  # 100: a ragged last group
def test_activation_quantization_kernel_equals_torch(m, k, group) -> None:
    x, _ = _problem(m, 1, k, scale=3.0)
    x[0, :group] = 0.0  # an all-zero group: finite scale, zero codes
    q, s = quantize_act_fp8_triton(x, group)
    q_ref, s_ref = quantize_act_fp8(x, group)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (m, -(-k // group))
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
    got, want = q.float(), q_ref.float()
    if DEVICE == "cpu":
        # Triton 3.9's interpreter casts float32 -> e4m3 without carrying a mantissa round-up into the exponent:
        # a value that rounds up to a power of two (124.7 -> 128) comes out as half of it (64). The GPU's cvt
        # rounds correctly; here those elements (and only those) may be exactly half.
        value = x.float() / s_ref.repeat_interleave(group, dim=1)[:, :k]
        carried = (want != 0) & (torch.frexp(want).mantissa.abs() == 0.5) & (value.abs() < want.abs())
        assert ((got[carried] == want[carried]) | (got[carried] == want[carried] / 2)).all()
        got, want = got[~carried], want[~carried]
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # same division, same rounding
    assert torch.equal(q[0, :group].float(), torch.zeros(group, device=DEVICE))
    col_q, col_s = quantize_act_fp8_triton(x, group, scale_col_major=True)
    assert col_s.stride(0) == 1 and torch.equal(col_s, s) and torch.equal(col_q.float(), q.float())


def test_activation_quantization_round_trip_is_within_e4m3_error() -> None:
    """e4m3 keeps 3 mantissa bits: relative error <= 2**-4 of each value for normals, plus the subnormal step
    (2**-9 of the group scale) near zero."""
    x, _ = _problem(4, 256, 256, seed=3, scale=2.0)
    q, s = quantize_act_fp8(x, 128)
    back = (q.float().view(4, 2, 128) * s[..., None]).view(4, 256)
    bound = x.abs() * 2**-4 + s.repeat_interleave(128, dim=1) * 2**-9
    assert (back - x).abs().le(bound).all()
    assert q.float().abs().amax() == FP8_E4M3_MAX  # each group's amax lands on e4m3's largest value


@pytest.mark.parametrize("m", [1, 7, 20])
@pytest.mark.parametrize("n,k,block,cfg", [
    (48, 64, (16, 16), Fp8GemmConfig(16, 16)),  # exact tiles
    (37, 80, (16, 16), Fp8GemmConfig(16, 32, split_k=2)),  # ragged N, split-K (partials + reduce)
    (40, 96, (1, 32), Fp8GemmConfig(16, 16, split_k=3)),  # row-carried scales (a fused, unaligned parameter)
    (33, 70, (16, 32), Fp8GemmConfig(32, 32)),  # ragged K group and ragged N tile
])
@pytest.mark.parametrize("bias", [False, True])
def test_w8a8_kernel_equals_the_float32_oracle(m, n, k, block, cfg, bias) -> None:
    x, w = _problem(m, n, k, seed=m + n)
    w_fp8, w_scale = quantize_block_fp8(w, block)
    x_fp8, x_scale = quantize_act_fp8(x, block[1])
    b = torch.randn(n).to(DEVICE) if bias else None
    got = w8a8_block_matmul(x_fp8, x_scale, w_fp8, w_scale, block, b, torch.float32, config=cfg)
    want = w8a8_block_matmul_reference(x_fp8, x_scale, w_fp8, w_scale, block, b)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    # and the oracle is the product it approximates: x @ W^T within FP8's error on both sides
    exact = x @ w.t() + (b if b is not None else 0)
    assert (want - exact).abs().max() < 0.15 * exact.abs().max()


def test_w8a8_refuses_mismatched_scales() -> None:
    x, w = _problem(2, 32, 64)
    w_fp8, w_scale = quantize_block_fp8(w, (16, 16))
    x_fp8, x_scale = quantize_act_fp8(x, 16)
    with pytest.raises(ValueError, match="do not fit 16x32 blocks"):
        w8a8_block_matmul(x_fp8, x_scale, w_fp8, w_scale, (16, 32))


def test_decode_configs_fill_the_sms() -> None:
    """Batch-1 decode at the 1.5B's shapes: >= 2 programs per SM of an H100 (132), never an empty split."""
    for n, k in [(2048, 1536), (1536, 1536), (17920, 1536), (1536, 8960)]:
        cfg = choose_fp8_config(1, n, k, 128)
        k_blocks = -(-k // 128)
        programs = -(-n // cfg.block_n) * min(cfg.split_k, k_blocks)
        assert programs >= 264 or cfg.split_k == k_blocks, (n, k, cfg)
    assert choose_fp8_config(512, 4096, 4096, 128).split_k == 1


def test_fp8_linear_on_the_kernel_stays_close_to_its_plain_path() -> None:
    from lab.engine.models.quant_linear import Fp8Linear

    g = torch.Generator().manual_seed(5)
    layer = Fp8Linear(64, 40, True, (16, 16), 16, torch.float32)
    w = torch.randn(40, 64, generator=g) * 0.1
    q, s = quantize_block_fp8(w, (16, 16))
    layer.weight.data, layer.weight_scale_inv.data = q, s
    layer.bias.data = torch.randn(40, generator=g)
    layer = layer.to(DEVICE)
    x = torch.randn(2, 3, 64, generator=g).to(DEVICE)
    plain = layer(x)  # fused off: dequantize + F.linear
    layer.fused, layer.gemm = True, "triton"
    fast = layer(x)
    assert fast.shape == plain.shape == (2, 3, 40)
    rel = (fast - plain).norm() / plain.norm()
    assert 0 < rel < 0.05, rel  # only the activations' e4m3 rounding differs


def test_the_dispatcher_keeps_cpu_on_the_plain_path() -> None:
    from lab.engine.fp8_gemm import choose_backend

    w = torch.zeros(256, 256, dtype=torch.float8_e4m3fn)
    assert choose_backend(torch.zeros(4, 256), w, (128, 128)) == "dequant"
