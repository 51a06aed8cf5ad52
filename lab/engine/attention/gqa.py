"""Grouped-query attention of one step over the paged K/V cache: one entry that picks the path.

Contract: `gqa_attention(q (T, H, D), k (T, Hkv, D), v (T, Hkv, Dv), k_cache, v_cache, meta, scale)
-> (T, H, Dv)`, after the step's k and v were written to the cache. `meta.backend` "reference" takes
the per-sequence oracle (`reference.paged_attention`); otherwise a pure-decode step takes the
vectorized torch or Triton decode (`decode.py`) and any other step (prefill, chunks over cached
context, mixed) `prefill.gqa_prefill_attention`.
"""
from __future__ import annotations

import torch

from lab.engine.attention.decode import gqa_decode_attention
from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.attention.prefill import gqa_prefill_attention
from lab.engine.attention.reference import paged_attention


def gqa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    meta: AttentionMetadata, scale: float,
) -> torch.Tensor:
    if meta.backend == "reference":
        return paged_attention(q, k_cache, v_cache, meta, scale)  # the oracle
    if meta.is_pure_decode:
        return gqa_decode_attention(q, k_cache, v_cache, meta, scale)
    return gqa_prefill_attention(q, k, v, k_cache, v_cache, meta, scale)  # prefill, chunks, mixed steps
