"""DeepSeek's block-FP8 weights: per-128x128-block float8_e4m3fn with a float32 `<name>_scale_inv`.

Contract:
- `quantize_block_fp8(w, block) -> (w_fp8, scale_inv)`: a 2-D weight (out, in) cut into `block` tiles;
  each tile's scale is amax / 448 (e4m3's largest finite value), floored at `MIN_AMAX` / 448 so an
  all-zero tile divides by something; `scale_inv` is (ceil(out/b0), ceil(in/b1)) float32. Ragged edge
  tiles are the crop of a zero-padded full tile, as DeepSeek's and vLLM's converters pad.
- `dequantize_block_fp8(w_fp8, scale_inv, block, dtype)`: fp8 * scale_inv broadcast per tile, in float32,
  then cast to `dtype` (what DeepSeek's `weight_dequant` does); a `scale_inv` of the wrong shape is a
  ValueError naming the tensor.
- `BlockFP8Config` / `parse_quantization_config(hf_dict)` (from the torch-free `lab.engine.quant_config`):
  config.json's `quantization_config`, or None.
- `dequantize_stream(tensors, block, dtype)`: a checkpoint's (name, tensor) stream with every fp8
  `X.weight` dequantized with its `X.weight_scale_inv` (the pair may arrive in either order or in different
  shards: the first one waits for its partner) and the scales consumed; other tensors pass through. An fp8
  weight without a scale or a scale without its weight is a ValueError naming it.
- `is_block_fp8_weight(hf_name, ndim)`: which tensors DeepSeek-V3 stores in fp8: 2-D `.weight`s of decoder
  layers except the MoE router (`mlp.gate.weight`); embeddings, norms, lm_head stay bf16.
- `fake_quantize_block_fp8_(module, block)`: every such weight still held in the engine dtype (MoE experts and
  MLA's kv_b_proj, which `lab.engine.weight_quant` keeps dense), cut along the checkpoint's own tensors (fused
  and stacked parameters are split back by `collect_targets`), is quantized and dequantized in place, so its
  numbers equal what FP8 storage gives; parameters already stored in 8 bits are skipped.

- `pair_fp8_stream(tensors)`: the same pairing, yielding `(name, tensor, scale_inv | None)`: an fp8 weight
  with its scale, anything else with None (`dequantize_stream` is this plus the dequantization; the FP8
  storage path, `lab.engine.weight_quant`, keeps the pair as it is).
- `quantize_act_fp8(x, group) -> (x_fp8, scale)`: activations per token per `group` columns (e4m3, float32
  scales (M, ceil(K/group)), amax floored at `MIN_ACT_AMAX`), the torch twin of the Triton kernel in
  `kernels/fp8_gemm.py`; `w8a8_block_matmul_reference(...)` is the float32 oracle of the FP8 GEMM: per K
  block, (x_fp8 @ w_fp8^T) * scale_x[:, kb] * scale_w[n // rows, kb], summed over K blocks.
Storage and the GEMMs that read it: `lab.engine.models.quant_linear` (Fp8Linear), `lab.engine.fp8_gemm`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from lab.engine.quant_config import DEFAULT_BLOCK, BlockFP8Config, check_block, parse_quantization_config

__all__ = ["BlockFP8Config", "parse_quantization_config", "quantize_block_fp8", "dequantize_block_fp8",
           "dequantize_stream", "pair_fp8_stream", "fake_quantize_block_fp8_", "is_block_fp8_weight",
           "quantize_act_fp8", "w8a8_block_matmul_reference"]

FP8_DTYPE = torch.float8_e4m3fn
FP8_E4M3_MAX = 448.0  # torch.finfo(float8_e4m3fn).max: 1.75 * 2**8
MIN_AMAX = 1e-4  # a tile's amax floor (vLLM's clamp): an all-zero tile gets a finite scale
MIN_ACT_AMAX = 1e-10  # an activation group's floor: a zero row (CUDA-graph padding) quantizes to zeros, not NaN
SCALE_SUFFIX = "_scale_inv"  # DeepSeek's name: dequantized = fp8 * scale_inv


def scale_shape(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    """(ceil(out/b0), ceil(in/b1)): one scale per tile, the ragged edge tiles included."""
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


def _tiles(w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """`w` zero-padded to whole tiles, viewed as (rows of tiles, b0, cols of tiles, b1)."""
    rows, cols = scale_shape(w.shape, block)
    padded = w.new_zeros(rows * block[0], cols * block[1])
    padded[: w.shape[0], : w.shape[1]] = w
    return padded.view(rows, block[0], cols, block[1])


@torch.no_grad()
def quantize_block_fp8(w: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_fp8 (out, in) float8_e4m3fn, scale_inv (ceil(out/b0), ceil(in/b1)) float32); see the module docstring."""
    block = check_block(block)
    if w.ndim != 2:
        raise ValueError(f"block fp8 quantizes 2-D weights, got shape {tuple(w.shape)}")
    tiles = _tiles(w.float(), block)  # (R, b0, C, b1)
    amax = tiles.abs().amax(dim=(1, 3), keepdim=True).clamp(min=MIN_AMAX)  # (R, 1, C, 1)
    scale = amax / FP8_E4M3_MAX
    # the clamp only catches fp32 rounding of amax/scale a hair above 448: e4m3fn has no inf, overflow is NaN
    q = (tiles / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE)
    q = q.view(tiles.shape[0] * block[0], tiles.shape[2] * block[1])[: w.shape[0], : w.shape[1]]
    return q.contiguous(), scale.view(tiles.shape[0], tiles.shape[2]).contiguous()


@torch.no_grad()
def dequantize_block_fp8(w_fp8: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK,
                         dtype: torch.dtype = torch.float32, name: str = "weight") -> torch.Tensor:
    """fp8 * scale_inv per tile, computed in float32, returned in `dtype`; `name` labels errors."""
    block = check_block(block)
    if w_fp8.ndim != 2:
        raise ValueError(f"{name}: block fp8 weights are 2-D, got shape {tuple(w_fp8.shape)}")
    expected = scale_shape(w_fp8.shape, block)
    if tuple(scale_inv.shape) != expected:
        raise ValueError(f"{name}{SCALE_SUFFIX} has shape {tuple(scale_inv.shape)}, expected {expected} for a "
                         f"{tuple(w_fp8.shape)} weight in {block[0]}x{block[1]} blocks")
    scale = scale_inv.to(device=w_fp8.device, dtype=torch.float32)
    full = scale.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)  # crop the ragged edge
    return (w_fp8.float() * full[: w_fp8.shape[0], : w_fp8.shape[1]]).to(dtype)


def is_block_fp8_weight(hf_name: str, ndim: int) -> bool:
    """Whether DeepSeek-V3's FP8 checkpoints store this tensor as fp8 (module docstring)."""
    return (ndim == 2 and hf_name.startswith("model.layers.") and hf_name.endswith(".weight")
            and not hf_name.endswith("mlp.gate.weight"))


def pair_fp8_stream(tensors: Iterable[tuple[str, torch.Tensor]]
                    ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """See the module docstring. Only a weight or scale whose partner has not arrived yet is held."""
    waiting_weights: dict[str, torch.Tensor] = {}
    waiting_scales: dict[str, torch.Tensor] = {}
    for name, tensor in tensors:
        if name.endswith(SCALE_SUFFIX):
            weight_name = name[: -len(SCALE_SUFFIX)]
            if weight_name in waiting_weights:
                yield weight_name, waiting_weights.pop(weight_name), tensor
            else:
                waiting_scales[weight_name] = tensor
        elif tensor.dtype == FP8_DTYPE:
            if name in waiting_scales:
                yield name, tensor, waiting_scales.pop(name)
            else:
                waiting_weights[name] = tensor
        else:
            yield name, tensor, None
    if waiting_weights:
        raise ValueError(f"fp8 tensors without a {SCALE_SUFFIX} tensor: {sorted(waiting_weights)[:5]}")
    if waiting_scales:
        raise ValueError(f"{SCALE_SUFFIX} tensors without their fp8 weight: "
                         f"{sorted(n + SCALE_SUFFIX for n in waiting_scales)[:5]}")


def dequantize_stream(tensors: Iterable[tuple[str, torch.Tensor]], block: tuple[int, int],
                      dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    """See the module docstring."""
    for name, tensor, scale_inv in pair_fp8_stream(tensors):
        yield name, tensor if scale_inv is None else dequantize_block_fp8(tensor, scale_inv, block, dtype, name)


@torch.no_grad()
def quantize_act_fp8(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (x_fp8 (M, K), scale (M, ceil(K/group)) float32): one scale per token per `group` columns."""
    m, k = x.shape
    groups = -(-k // group)
    padded = x.new_zeros(m, groups * group, dtype=torch.float32)
    padded[:, :k] = x.float()
    tiles = padded.view(m, groups, group)
    scale = tiles.abs().amax(dim=-1).clamp(min=MIN_ACT_AMAX) / FP8_E4M3_MAX  # (M, G)
    q = (tiles / scale[..., None]).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE)
    return q.view(m, groups * group)[:, :k].contiguous(), scale


@torch.no_grad()
def w8a8_block_matmul_reference(x_fp8: torch.Tensor, x_scale: torch.Tensor, w_fp8: torch.Tensor,
                                w_scale_inv: torch.Tensor, block: tuple[int, int],
                                bias: torch.Tensor | None = None) -> torch.Tensor:
    """The FP8 GEMM's arithmetic in float32 (the oracle of `kernels/fp8_gemm.py`): x (M, K) with scales per
    (token, `block[1]` columns), W (N, K) with one scale per `block` tile -> (M, N) float32."""
    rows, group = block
    k = x_fp8.shape[1]
    out = torch.zeros(x_fp8.shape[0], w_fp8.shape[0], dtype=torch.float32, device=x_fp8.device)
    w_rows_scale = w_scale_inv.float().repeat_interleave(rows, dim=0)[: w_fp8.shape[0]]  # (N, KB)
    for kb, start in enumerate(range(0, k, group)):
        cols = slice(start, min(start + group, k))
        partial = x_fp8[:, cols].float() @ w_fp8[:, cols].float().t()  # exact in float32 at these sizes
        out += partial * x_scale[:, kb, None].float() * w_rows_scale[None, :, kb]
    return out if bias is None else out + bias.float()


@torch.no_grad()
def fake_quantize_block_fp8_(module: nn.Module, block: tuple[int, int] = DEFAULT_BLOCK) -> int:
    """Quantize and dequantize, in place, every weight an FP8 checkpoint would store as fp8, tile grid per
    checkpoint tensor. Returns how many checkpoint tensors it rounded."""
    from lab.engine.models.weights import collect_targets  # models import nothing from here; keep it that way

    params = dict(module.named_parameters())
    count = 0
    for hf_name, (param_name, index) in collect_targets(module).items():
        view = params[param_name][index] if index else params[param_name]
        if not is_block_fp8_weight(hf_name, view.ndim) or view.dtype in (FP8_DTYPE, torch.int8):
            continue  # 8-bit storage (Fp8Linear / Int8Linear) holds its quantized numbers already
        w_fp8, scale_inv = quantize_block_fp8(view, block)
        view.copy_(dequantize_block_fp8(w_fp8, scale_inv, block, view.dtype, hf_name))
        count += 1
    return count
