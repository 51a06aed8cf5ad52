"""Rotary position embedding: plain, linear, llama3 and YaRN frequencies; half-split or interleaved pairs.

Contract: `RotaryEmbedding(dim, base, scaling, interleaved)(positions)` returns a `Rotation` for
the step's (T,) positions; `rotation.apply(x)` rotates x (T, H, dim) and keeps x's dtype. Frequencies follow transformers' `ROPE_INIT_FUNCTIONS` exactly (float32), including
YaRN's cos/sin magnitude `attention_factor`. `mla_softmax_scale` is DeepSeek's extra softmax
correction, mscale(factor, mscale_all_dim)**2, which transformers applies in DeepseekV2/V3 attention.

Layouts: Llama/Qwen2 (and DeepSeek-V3 with rope_interleave=False) pair channel i with i + dim/2
("half"); DeepSeek-V2 and V3 (rope_interleave=True) pair channel 2i with 2i+1 ("interleaved").
The output keeps the input layout; any layout applied to both q and k gives the same q·k, so
cached keys only need to agree with the queries of the same model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lab.engine.model_config import RopeScaling


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def mla_softmax_scale(qk_head_dim: int, scaling: RopeScaling | None) -> float:
    """qk_head_dim**-0.5, times mscale(factor, mscale_all_dim)**2 under YaRN (DeepSeek's long-context fix)."""
    scale = qk_head_dim**-0.5
    if scaling is not None and scaling.mscale_all_dim:
        m = yarn_get_mscale(scaling.factor, scaling.mscale_all_dim)
        scale = scale * m * m
    return scale


def compute_inv_freq(dim: int, base: float, scaling: RopeScaling | None) -> tuple[torch.Tensor, float]:
    """(inv_freq (dim/2,) float32 on CPU, attention_factor multiplying cos and sin)."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    inv_freq = 1.0 / (base**exponents)
    if scaling is None:
        return inv_freq, 1.0
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor, 1.0
    if scaling.rope_type == "llama3":
        return _llama3(inv_freq, scaling), 1.0
    if scaling.rope_type == "yarn":
        return _yarn(dim, base, scaling)
    raise ValueError(f"rope type {scaling.rope_type!r} is not supported")


def _llama3(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(dim: int, base: float, s: RopeScaling) -> tuple[torch.Tensor, float]:
    if s.attention_factor is not None:
        attention_factor = float(s.attention_factor)
    elif s.mscale and s.mscale_all_dim:
        attention_factor = yarn_get_mscale(s.factor, s.mscale) / yarn_get_mscale(s.factor, s.mscale_all_dim)
    else:
        attention_factor = yarn_get_mscale(s.factor)

    def correction_dim(num_rotations: float) -> float:
        # the dim whose wavelength fits `num_rotations` times into the original context
        return (dim * math.log(s.original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    extrapolation = 1.0 / pos_freqs  # high-frequency dims: unchanged
    interpolation = 1.0 / (s.factor * pos_freqs)  # low-frequency dims: stretched by factor
    keep = 1 - ramp
    return interpolation * (1 - keep) + extrapolation * keep, attention_factor


@dataclass
class Rotation:
    """The angles of one step's tokens, computed once and applied by every layer."""

    cos: torch.Tensor  # (T, dim/2) float32, times attention_factor
    sin: torch.Tensor
    interleaved: bool
    fused: bool = False  # one Triton kernel (kernels/fused_ops.py) instead of ~10 torch ops

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, H, dim) rotated in float32, returned in x's dtype."""
        if self.fused:
            from lab.engine.kernels.fused_ops import rotate_triton

            return rotate_triton(x, self.cos, self.sin, self.interleaved)
        xf = x.float()
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]  # (T, 1, dim/2): same angle for every head
        if self.interleaved:
            x1, x2 = xf[..., 0::2], xf[..., 1::2]
            out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        else:
            half = x.shape[-1] // 2
            x1, x2 = xf[..., :half], xf[..., half:]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return out.to(x.dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float, scaling: RopeScaling | None, interleaved: bool) -> None:
        super().__init__()
        self.dim = dim
        self.interleaved = interleaved
        self.fused = False
        inv_freq, self.attention_factor = compute_inv_freq(dim, base, scaling)
        # built on CPU explicitly so it survives a meta-device model construction; moved by .to(device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> Rotation:
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (T, dim/2)
        f = self.attention_factor
        return Rotation(freqs.cos() * f, freqs.sin() * f, self.interleaved, self.fused)
