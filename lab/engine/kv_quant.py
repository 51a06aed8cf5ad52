"""KV cache in 8 bits: `kv_cache_dtype` "fp8" (e4m3, vLLM's name) or "int8", with scales stored beside it.

Contract:
  KV_CACHE_DTYPES                      the names `EngineArgs.kv_cache_dtype` takes ("auto" = the model dtype)
  kv_storage_dtype(name) -> dtype|None torch.float8_e4m3fn, torch.int8, or None for "auto"; ValueError otherwise
  QuantizedCache(data, scale, groups, compute_dtype)
      one paged cache tensor in 8 bits: data (N, bs, *lead, W) float8_e4m3fn / int8, scale (N, bs, *lead, G)
      float32, the last dim W cut into G contiguous parts of widths `groups`, each with its own scale per token
  quantize_rows(x (..., W), storage, groups) -> (data (..., W), scale (..., G))
  dequantize_rows(data, scale, groups, dtype) -> (..., W) in `dtype`: data * scale, part by part
  write_rows(cache, slot_mapping, values)  quantize `values` (T, *lead, W) into the flat rows `slot_mapping`
  read_blocks(cache, block_ids) -> cache[block_ids], dequantized to the model dtype for a QuantizedCache
  as_cached(x, cache) -> x as the cache holds it: quantized and dequantized for a QuantizedCache, else x itself
  kernel_operands(k_cache, v_cache) -> (k, v, k_scale, v_scale, quantized): what a Triton reader takes: the codes
      and scales of an 8-bit pair, or the plain tensors twice over (the scale pointers are then never read)
The Triton write kernels (`kernels/kv_write.py`, `rope_kv_write.py`, `mla_latent_write.py`) compute the
same scales and codes (`kernels/kv_quant.py`); the readers dequantize in registers.

Scales: one float32 scale per (token, KV head) for GQA K and V, and two per token for the MLA latent row
(one for c_kv, kv_lora_rank wide, one for the rotated k_pe), computed when the row is written:
scale = max|x| / QMAX over the part (QMAX = 448 for e4m3, 127 for int8), code = x / scale (int8: rounded
half away from zero), clamped to +-QMAX. Why this scheme and not vLLM's default (one scale of 1.0 per
layer, optionally calibrated): the lab runs dummy weights with no calibration data, and a fixed scale
either overflows e4m3 (max 448) or sends small values into its subnormals, while int8 needs a scale
anyway. Scaling each written row to its own range needs no calibration, no state across steps and is
exact to the format's relative step (e4m3: 2^-4 of a value, half that rounded; int8: max|x| / 254).
Why MLA has two parts: c_kv (after RMSNorm) and k_pe (after RoPE) have unrelated ranges; one shared
scale would flatten k_pe to a few int8 levels. Cost: 4 bytes per (token, head) beside D bytes of codes:
GQA head_dim 128 stores 132 bytes where bf16 stores 256 (1.94x the tokens per byte), MLA's 576-wide
latent row 584 bytes where bf16 stores 1152 (1.97x).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "int8")
_STORAGE = {"fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "int8": torch.int8}
QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}  # largest code: e4m3's max finite value, int8's symmetric max
SCALE_DTYPE = torch.float32
AMAX_FLOOR = 1e-30  # an all-zero part gets a tiny scale, not 0 (x / 0 would be NaN); its codes are all 0


def kv_storage_dtype(name: str) -> torch.dtype | None:
    """The 8-bit dtype a `kv_cache_dtype` name stores, None for "auto" (the model's dtype)."""
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {name!r}")
    return _STORAGE.get(name)


@dataclass(frozen=True)
class QuantizedCache:
    """One 8-bit paged cache tensor and its per-token scales; used where a plain cache tensor would be."""

    data: torch.Tensor  # (num_blocks, block_size, *lead, W) float8_e4m3fn or int8
    scale: torch.Tensor  # (num_blocks, block_size, *lead, G) float32
    groups: tuple[int, ...]  # widths of W's parts (sum W), one scale each
    compute_dtype: torch.dtype  # the model's dtype: what reads dequantize to

    def __post_init__(self) -> None:
        if sum(self.groups) != self.data.shape[-1] or self.scale.shape != (*self.data.shape[:-1], len(self.groups)):
            raise ValueError(f"QuantizedCache: data {tuple(self.data.shape)} and scale {tuple(self.scale.shape)} do "
                             f"not fit groups {self.groups}")

    @property
    def shape(self) -> torch.Size:
        return self.data.shape  # as a plain cache's: (num_blocks, block_size, *per_token_shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype  # the stored dtype, as a tensor's (callers that can only handle floats see 8 bits)


def _expand_groups(scale: torch.Tensor, groups: tuple[int, ...]) -> torch.Tensor:
    """(..., G) -> (..., W): each part's scale repeated over its width."""
    if len(groups) == 1:
        return scale  # broadcasts over W
    sizes = torch.tensor(groups, device=scale.device)
    return scale.repeat_interleave(sizes, dim=-1)


def round_half_away(y: torch.Tensor) -> torch.Tensor:
    """Round to integers, ties away from zero (what the Triton writers compute: floor(|y| + 0.5) with y's sign)."""
    return torch.sign(y) * torch.floor(y.abs() + 0.5)


def quantize_rows(x: torch.Tensor, storage: torch.dtype, groups: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = QMAX[storage]
    parts = x.float().split(list(groups), dim=-1)
    amax = torch.stack([p.abs().amax(dim=-1) for p in parts], dim=-1)  # (..., G)
    scale = amax.clamp(min=AMAX_FLOOR) / qmax
    y = (x.float() / _expand_groups(scale, groups)).clamp(-qmax, qmax)  # clamp: e4m3fn has no inf (overflow is NaN)
    if storage == torch.int8:
        y = round_half_away(y)
    return y.to(storage), scale.to(SCALE_DTYPE)


def dequantize_rows(data: torch.Tensor, scale: torch.Tensor, groups: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return (data.float() * _expand_groups(scale.float(), groups)).to(dtype)


def write_rows(cache: QuantizedCache, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    """Quantize `values` (T, *lead, W) and store codes and scales at the flat rows `slot_mapping`."""
    data, scale = quantize_rows(values, cache.data.dtype, cache.groups)
    # as bytes: CPU index_copy_ and indexing have no float8 kernels; moving codes needs none
    cache.data.view(torch.uint8).view(-1, *cache.data.shape[2:]).index_copy_(0, slot_mapping, data.view(torch.uint8))
    cache.scale.view(-1, *cache.scale.shape[2:]).index_copy_(0, slot_mapping, scale)


def as_cached(x: torch.Tensor, cache: torch.Tensor | QuantizedCache) -> torch.Tensor:
    """Rows (..., W) at the precision `cache` stores them. A prefill that attends over the step's own K/V (no
    cached context) uses this so that it sees what every later chunk, CUDA graph and the reference read back:
    otherwise the same prompt's attention would depend on how it was chunked."""
    if not isinstance(cache, QuantizedCache):
        return x
    data, scale = quantize_rows(x, cache.data.dtype, cache.groups)
    return dequantize_rows(data, scale, cache.groups, x.dtype)


def kernel_operands(k_cache, v_cache):
    if isinstance(k_cache, QuantizedCache):
        return k_cache.data, v_cache.data, k_cache.scale, v_cache.scale, True
    return k_cache, v_cache, k_cache, v_cache, False


def read_blocks(cache: torch.Tensor | QuantizedCache, block_ids: torch.Tensor) -> torch.Tensor:
    """cache[block_ids] ((*block_ids.shape, block_size, *per_token_shape)), in the model's dtype."""
    if isinstance(cache, torch.Tensor):
        return cache[block_ids]
    codes = cache.data.view(torch.uint8)[block_ids].view(cache.data.dtype)  # bytes: see write_rows
    return dequantize_rows(codes, cache.scale[block_ids], cache.groups, cache.compute_dtype)
