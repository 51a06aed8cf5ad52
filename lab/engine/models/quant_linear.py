"""Linear layers whose weights are stored in 8 bits: `Fp8Linear` (block-scaled e4m3) and `Int8Linear` (W8A16).

Contract: both are `Linear`s (same `forward(x (..., in)) -> (..., out)`, same bias in the engine dtype) whose
`weight` parameter holds the 8-bit codes and a float32 scale parameter beside it:
  Fp8Linear   weight (out, in) float8_e4m3fn, weight_scale_inv (ceil(out/scale_rows), ceil(in/block[1])):
              one scale per `scale_rows` x block[1] tile. scale_rows = block[0], as DeepSeek's checkpoints
              store it, unless a fused parameter's parts (gate | up, q | k | v) do not start on tile
              boundaries: then 1 (each row carries its tile's scale), so every part keeps its own grid.
  Int8Linear  weight (out, in) int8, weight_scale (out,): symmetric per output channel.
`dense_weight(dtype)` is the dequantized weight (the plain path and what fidelity compares). `quantize_part`
turns one checkpoint tensor (dense, or fp8 with its scale) into (codes, scale) in this layer's layout;
`scale_index(index)` maps a part's row slice of the weight to its rows of the scale.
Which GEMM runs (`gemm`: "auto" or forced, as tests do under Triton's interpreter):
  fp8   "dequant" (the plain path: dequantize to x's dtype, F.linear; CPU, pre-Ada GPUs, fused ops off),
        "triton" (activations quantized per token per 128 columns, `kernels/fp8_gemm.py`), "scaled_mm"
        (Hopper's block-scaled cuBLAS GEMM); "auto" asks `lab.engine.fp8_gemm.choose_backend`.
  int8  "dequant", or "triton" for at most `int8_gemv.MAX_M` rows (`kernels/int8_gemv.py`: reads the codes,
        one scale per row at the end); "auto" = triton on CUDA for 16-bit x at decode sizes.
Fused ops off (`fused` False, `set_fused_ops`) always takes the plain path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lab.engine.fp8 import FP8_DTYPE, SCALE_SUFFIX, dequantize_block_fp8, quantize_block_fp8, scale_shape
from lab.engine.int8 import dequantize_int8, quantize_int8
from lab.engine.models.layers import GEMV_DTYPES, GEMV_MAX_ROWS, Linear

FP8_GEMMS = ("auto", "dequant", "triton", "scaled_mm")
INT8_GEMMS = ("auto", "dequant", "triton")


def _row_slice(index: tuple) -> slice | None:
    if not index:
        return None
    if len(index) != 1 or not isinstance(index[0], slice):
        raise ValueError(f"a quantized Linear's parts are row slices, got index {index!r}")
    return index[0]


class Fp8Linear(Linear):
    fp32_params = ("weight_scale_inv",)
    param_dtypes = {"weight": FP8_DTYPE}  # build_model materializes these in their own dtype
    scale_name = "weight_scale_inv"
    scale_suffix = SCALE_SUFFIX  # checkpoint name of a weight's scale: X.weight -> X.weight_scale_inv

    def __init__(self, in_features: int, out_features: int, bias: bool, block: tuple[int, int], scale_rows: int,
                 compute_dtype: torch.dtype) -> None:
        super().__init__(in_features, out_features, bias)
        self.block = block
        self.scale_rows = scale_rows
        self.compute_dtype = compute_dtype  # the engine dtype: dummy weights are drawn in it, then quantized
        self.gemm = "auto"
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_DTYPE), requires_grad=False)
        rows, cols = scale_shape((out_features, in_features), (scale_rows, block[1]))
        self.weight_scale_inv = nn.Parameter(torch.empty(rows, cols, dtype=torch.float32), requires_grad=False)

    @property
    def scale_block(self) -> tuple[int, int]:
        return self.scale_rows, self.block[1]

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_block_fp8(self.weight, self.weight_scale_inv, self.scale_block, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.numel():
            from lab.engine.fp8_gemm import choose_backend, fp8_linear

            backend = self.gemm if self.gemm != "auto" else choose_backend(x, self.weight, self.scale_block)
            if backend != "dequant":
                y = fp8_linear(x.reshape(-1, x.shape[-1]), self.weight, self.weight_scale_inv, self.scale_block,
                               self.bias, backend)
                return y.view(*x.shape[:-1], -1)
        return F.linear(x, self.dense_weight(x.dtype), self.bias)

    def quantize_part(self, tensor: torch.Tensor, scale_inv: torch.Tensor | None,
                      source_block: tuple[int, int] | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One checkpoint tensor -> (fp8 codes, scales in this layer's layout). An fp8 tensor on this layer's
        grid is kept bit for bit; on another grid it is dequantized and quantized again; a dense one quantized."""
        if scale_inv is not None and source_block == self.block:
            q, s = tensor, scale_inv.to(device=tensor.device, dtype=torch.float32)
            expected = scale_shape(tuple(q.shape), self.block)
            if tuple(s.shape) != expected:
                raise ValueError(f"{name}{SCALE_SUFFIX} has shape {tuple(s.shape)}, expected {expected} for a "
                                 f"{tuple(q.shape)} weight in {self.block[0]}x{self.block[1]} blocks")
        else:
            if scale_inv is not None:
                tensor = dequantize_block_fp8(tensor, scale_inv, source_block, torch.float32, name)
            q, s = quantize_block_fp8(tensor, self.block)
        if self.scale_rows != self.block[0]:  # row-carried scales: each row takes its tile's
            s = s.repeat_interleave(self.block[0], dim=0)[: q.shape[0]]
        return q, s

    def scale_index(self, index: tuple) -> tuple:
        rows = _row_slice(index)
        if rows is None:
            return ()
        if rows.start % self.scale_rows:  # quantize_linears_ chose scale_rows so that this never happens
            raise ValueError(f"part starting at row {rows.start} is not on a {self.scale_rows}-row tile boundary")
        return (slice(rows.start // self.scale_rows, -(-rows.stop // self.scale_rows)),)


class Int8Linear(Linear):
    fp32_params = ("weight_scale",)
    param_dtypes = {"weight": torch.int8}
    scale_name = "weight_scale"
    scale_suffix = "_scale"  # internal only: no int8 checkpoint format is read or written

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype) -> None:
        super().__init__(in_features, out_features, bias)
        self.compute_dtype = compute_dtype
        self.gemm = "auto"
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(out_features, dtype=torch.float32), requires_grad=False)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_int8(self.weight, self.weight_scale, dtype)

    def takes_gemv(self, x: torch.Tensor) -> bool:
        """Shapes, dtypes and flags only: the same at CUDA-graph capture and replay."""
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if not (self.fused and 0 < rows <= GEMV_MAX_ROWS) or self.gemm == "dequant":
            return False
        return self.gemm == "triton" or (x.is_cuda and x.dtype in GEMV_DTYPES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_gemv(x):
            from lab.engine.kernels.int8_gemv import int8_gemv  # CUDA (or Triton's interpreter) only

            y = int8_gemv(x.reshape(-1, x.shape[-1]), self.weight, self.weight_scale, self.bias)
            return y.view(*x.shape[:-1], -1)
        return F.linear(x, self.dense_weight(x.dtype), self.bias)

    def quantize_part(self, tensor: torch.Tensor, scale_inv: torch.Tensor | None,
                      source_block: tuple[int, int] | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if scale_inv is not None:  # an fp8 checkpoint under quantization="int8": its numbers, re-quantized
            tensor = dequantize_block_fp8(tensor, scale_inv, source_block, torch.float32, name)
        return quantize_int8(tensor)

    def scale_index(self, index: tuple) -> tuple:
        rows = _row_slice(index)
        return () if rows is None else (rows,)


QUANT_LINEARS = (Fp8Linear, Int8Linear)
