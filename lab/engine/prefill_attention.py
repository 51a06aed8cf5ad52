"""Prefill attention through torch SDPA for sequences that start at position 0.

Contract: `prefill_attention_sdpa(q (T, H, D), k (T, Hkv, D), v (T, Hkv, Dv), meta, scale) -> (T, H, Dv)`
equals `attention.paged_attention` when no sequence of the step has cached context
(`meta.no_cached_context`): the step's own K/V are then each sequence's whole context, so the
cache need not be read back. `scaled_dot_product_attention` picks its fastest backend (flash on
CUDA in bf16/fp16, with `enable_gqa` so K/V are not repeated per head); prefill is compute-bound,
so one call per sequence costs little next to its GEMMs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.engine.attention import AttentionMetadata


def prefill_attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    starts = meta.query_start_loc
    for i in range(meta.num_seqs):
        s, e = starts[i], starts[i + 1]
        o = F.scaled_dot_product_attention(
            q[s:e].transpose(0, 1)[None],  # (1, H, L, D)
            k[s:e].transpose(0, 1)[None],  # (1, Hkv, L, D)
            v[s:e].transpose(0, 1)[None],
            is_causal=True,
            scale=scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        out[s:e] = o[0].transpose(0, 1)  # (L, H, Dv)
    return out
