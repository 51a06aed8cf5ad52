"""Weight-only int8 (W8A16): symmetric per-output-channel int8 weights with one float32 scale per row.

Contract:
- `quantize_int8(w) -> (w_int8 (out, in) int8, scale (out,) float32)`: scale = amax(|row|) / 127 (floored at
  `MIN_AMAX` / 127, so an all-zero row has a finite scale); q = round(w / scale) clamped to [-127, 127]
  (symmetric: -128 is never used, so negating a row negates its codes exactly).
- `dequantize_int8(w_int8, scale, dtype)`: q * scale in float32, cast to `dtype`.
Round trip: |w - dequantize(quantize(w))| <= scale / 2 elementwise (round to nearest), i.e. at most
amax(row) / 254 per row. Activations stay in the engine dtype: the GEMV (`kernels/int8_gemv.py`) reads the
int8 codes, multiplies in float32 and applies the row's scale once, at the end.
"""
from __future__ import annotations

import torch

INT8_MAX = 127  # symmetric range: codes in [-127, 127]
MIN_AMAX = 1e-8  # a row's amax floor: an all-zero row quantizes to zeros with a finite scale


@torch.no_grad()
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) -> (int8 codes (out, in), float32 scale (out,)); see the module docstring."""
    if w.ndim != 2:
        raise ValueError(f"int8 weight quantization takes 2-D weights, got shape {tuple(w.shape)}")
    wf = w.float()
    scale = wf.abs().amax(dim=1).clamp(min=MIN_AMAX) / INT8_MAX  # (out,)
    q = torch.round(wf / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.contiguous()


@torch.no_grad()
def dequantize_int8(w_int8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if w_int8.ndim != 2 or scale.shape != (w_int8.shape[0],):
        raise ValueError(f"int8 weight (out, in) needs a scale (out,): got {tuple(w_int8.shape)} and "
                         f"{tuple(scale.shape)}")
    return (w_int8.float() * scale.float()[:, None]).to(dtype)
