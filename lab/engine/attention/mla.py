"""MLA's absorbed attention over the latent cache: one entry that picks the path.

Contract: `absorbed_latent_attention(q (T, H, R + rope), cache, meta, rank, scale) -> (T, H, R)`:
queries already in latent space (q_nope @ W_UK beside the rotated q_pe) score whole cache rows
[c_kv | k_pe], and the values are the c_kv part. A pure-decode step takes the Triton or vectorized
torch decode (`decode.mla_decode_attention`) unless the backend is "reference", which takes the
padded all-sequences oracle; any other step takes the per-sequence oracle. The expanded path
(K/V rebuilt per head with kv_b_proj) needs the layer's weights and stays in `models/mla.py`.
"""
from __future__ import annotations

import torch

from lab.engine.attention.decode import mla_decode_attention
from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.attention.reference import latent_attention, latent_decode_attention


def absorbed_latent_attention(
    q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata, rank: int, scale: float
) -> torch.Tensor:
    if meta.is_pure_decode and meta.backend != "reference":
        return mla_decode_attention(q, cache, meta, rank, scale)  # no per-sequence loop
    if meta.is_pure_decode:
        return latent_decode_attention(q, cache, meta, rank, scale)
    return latent_attention(q, cache, meta, rank, scale)
