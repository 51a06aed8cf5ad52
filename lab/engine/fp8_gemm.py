"""Which FP8 GEMM an `Fp8Linear` runs, chosen by capability, and the call into it.

Contract:
- `choose_backend(x, weight, scale_block) -> "dequant" | "triton" | "scaled_mm"`, from the device, the shapes
  and the scale grid only (so the same at CUDA-graph capture and replay):
    dequant    CPU, GPUs before Ada (sm < 8.9: no fp8 tensor cores), or a K group < 32 (fp8 dot's minimum):
               the plain path, weights dequantized to x's dtype for F.linear.
    triton     `kernels/fp8_gemm.py`: decode-sized M (<= 16, split-K fills the SMs), and any shape cuBLAS
               cannot take.
    scaled_mm  M > 16 on a device where `torch._scaled_mm` runs DeepSeek's recipe (1x128 activation scales,
               128x128 weight scales), the scales on exactly that grid and K, N multiples of 128.
- `scaled_mm_layout(device)`: whether this torch + cuBLAS runs block-wise `_scaled_mm`, found once per device
  by running it on a small problem in each scale layout it may want and comparing with the float32 oracle
  (`fp8.w8a8_block_matmul_reference`); None when no layout works (older torch or cuBLAS, not Hopper). Never
  probed inside a CUDA-graph capture (the answer is then "not known yet": triton).
- `fp8_linear(x (M, K), weight (N, K) fp8, weight_scale_inv, scale_block, bias, backend) -> (M, N)` in x's
  dtype: activations quantized per token per 128 columns (`quantize_act_fp8_triton`), then the GEMM.
"""
from __future__ import annotations

import torch

from lab.engine.fp8 import quantize_block_fp8, w8a8_block_matmul_reference

DECODE_MAX_M = 16  # kernels/fp8_gemm.py DECODE_MAX_M: split-K Triton below, cuBLAS above when it can
MIN_FP8_CAPABILITY = (8, 9)  # Ada / Hopper: fp8 tensor cores
MIN_DOT_GROUP = 32  # fp8 tl.dot's K on a GPU
SCALED_MM_BLOCK = (128, 128)  # the only grid cuBLAS's block-wise recipe takes
_LAYOUTS: dict[int, tuple[bool, bool] | None] = {}  # device index -> (scale_a column-major, scale_b contiguous)


def choose_backend(x: torch.Tensor, weight: torch.Tensor, scale_block: tuple[int, int]) -> str:
    if not x.is_cuda or scale_block[1] < MIN_DOT_GROUP:
        return "dequant"
    if torch.cuda.get_device_capability(x.device) < MIN_FP8_CAPABILITY:
        return "dequant"
    rows = x.numel() // x.shape[-1]
    n, k = weight.shape
    if (rows > DECODE_MAX_M and tuple(scale_block) == SCALED_MM_BLOCK and n % 128 == 0 and k % 128 == 0
            and scaled_mm_layout(x.device) is not None):
        return "scaled_mm"
    return "triton"


def scaled_mm_layout(device: torch.device) -> tuple[bool, bool] | None:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _LAYOUTS:
        if torch.cuda.is_current_stream_capturing():
            return None  # probing syncs: not during a capture (the eager warm-up before it probes)
        _LAYOUTS[index] = _probe(torch.device("cuda", index))
    return _LAYOUTS[index]


@torch.no_grad()
def _probe(device: torch.device) -> tuple[bool, bool] | None:
    if torch.cuda.get_device_capability(device) < (9, 0) or not hasattr(torch, "_scaled_mm"):
        return None
    from lab.engine.kernels.fp8_gemm import quantize_act_fp8_triton

    gen = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(256, 384, generator=gen, device=device)
    w_fp8, w_scale = quantize_block_fp8(w, SCALED_MM_BLOCK)
    for a_col_major in (True, False):
        for b_contiguous in (False, True):
            try:
                for m in (1, 17, 160):  # cuBLAS's constraints may depend on M: all must pass
                    x = torch.randn(m, 384, generator=gen, device=device, dtype=torch.bfloat16)
                    x_fp8, x_scale = quantize_act_fp8_triton(x, 128, scale_col_major=a_col_major)
                    scale_b = w_scale.t().contiguous() if b_contiguous else w_scale.t()
                    got = torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=x_scale, scale_b=scale_b,
                                           out_dtype=torch.bfloat16).float()
                    want = w8a8_block_matmul_reference(x_fp8, x_scale, w_fp8, w_scale, SCALED_MM_BLOCK)
                    if not torch.allclose(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item()):
                        raise RuntimeError("block-wise _scaled_mm disagrees with the oracle")
                return a_col_major, b_contiguous
            except (RuntimeError, ValueError, TypeError):
                continue  # this layout (or block-wise scaling altogether) is not supported here
    return None


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale_inv: torch.Tensor, scale_block: tuple[int, int],
               bias: torch.Tensor | None, backend: str) -> torch.Tensor:
    from lab.engine.kernels.fp8_gemm import quantize_act_fp8_triton, w8a8_block_matmul  # CUDA / interpreter only

    if backend == "scaled_mm":
        layout = scaled_mm_layout(x.device)
        if layout is None:
            raise ValueError("backend 'scaled_mm' needs block-wise torch._scaled_mm, which this device/torch lacks")
        a_col_major, b_contiguous = layout
        x_fp8, x_scale = quantize_act_fp8_triton(x, SCALED_MM_BLOCK[1], scale_col_major=a_col_major)
        scale_b = weight_scale_inv.t().contiguous() if b_contiguous else weight_scale_inv.t()  # (K/128, N/128)
        y = torch._scaled_mm(x_fp8, weight.t(), scale_a=x_scale, scale_b=scale_b, out_dtype=x.dtype)
        return y if bias is None else y.add_(bias)
    if backend == "triton":
        x_fp8, x_scale = quantize_act_fp8_triton(x, scale_block[1])
        return w8a8_block_matmul(x_fp8, x_scale, weight, weight_scale_inv, scale_block, bias, x.dtype)
    raise ValueError(f"fp8 GEMM backend must be 'triton' or 'scaled_mm' here, got {backend!r}")
