"""Attention for steps that are not pure decode: prefill, chunked prefill over cached context, mixed steps.

Contracts (each equals `attention.reference.paged_attention` on the same step):
  prefill_attention_sdpa(q (T, H, D), k (T, Hkv, D), v (T, Hkv, Dv), meta, scale) -> (T, H, Dv)
    only when no sequence has cached context (`meta.no_cached_context`): the step's own K/V are
    then each sequence's whole context, so the cache need not be read back (`gqa_prefill_attention`
    passes them through `kv_quant.as_cached` first: with an 8-bit cache they carry its rounding).
  gqa_mixed_attention_torch(q, k_cache, v_cache, meta, scale) -> (T, H, Dv): any step. Its
    one-token sequences go through the vectorized decode path as one batch
    (`decode.gqa_decode_attention_torch` on `meta.split.decode_meta`); each prefill span
    is one SDPA call over its sequence's gathered context with a lower-right causal mask.
  gqa_prefill_attention(q, k, v, k_cache, v_cache, meta, scale): the dispatch for a non-decode
    step on the "torch" / "triton" backends.
  causal_sdpa(q (Lq, H, D), k (Lk, Hkv, D), v (Lk, Hkv, Dv), scale) -> (Lq, H, Dv): queries at the
    last Lq positions of Lk keys (lower-right causal), shared with MLA's mixed path.

Why this split: `scaled_dot_product_attention` picks its fastest backend (flash on CUDA in
bf16/fp16, with `enable_gqa` so K/V are not repeated per head; a fused kernel on CPU), and a step
holds few prefill spans (a token budget of 8192 fits a handful of prompts) but up to hundreds of
decode rows, which must not each cost a Python iteration and a kernel launch per layer. Padding
every span to the longest instead would make a (B, H, max_q, max_kv) score tensor. On the
"triton" backend GQA takes one varlen kernel for the whole step (`kernels/varlen_attention.py`),
except prefill without cached context, which keeps flash SDPA per sequence (already optimal
compute; the step's K/V need not be re-read from the paged cache).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.attention.reference import causal_mask, gather_sequence
from lab.engine.attention.decode import gqa_decode_attention_torch
from lab.engine.kv_quant import as_cached


def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    q_len, kv_len = q.shape[0], k.shape[0]
    gqa = q.shape[1] != k.shape[1]
    mask = None
    if q_len != kv_len:  # cached context: query j sits at position kv_len - q_len + j
        if q.is_cuda and not gqa:  # flash / memory-efficient kernels take lower-right causality natively
            from torch.nn.attention.bias import causal_lower_right

            mask = causal_lower_right(q_len, kv_len)
        else:
            mask = causal_mask(q_len, kv_len, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],  # (1, H, Lq, D)
        k.transpose(0, 1)[None],  # (1, Hkv, Lk, D)
        v.transpose(0, 1)[None],
        attn_mask=mask,
        is_causal=mask is None,
        scale=scale,
        enable_gqa=gqa,
    )
    return out[0].transpose(0, 1)  # (Lq, H, Dv)


def prefill_attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    starts = meta.query_start_loc
    for i in range(meta.num_seqs):
        s, e = starts[i], starts[i + 1]
        out[s:e] = causal_sdpa(q[s:e], k[s:e], v[s:e], scale)
    return out


def gqa_mixed_attention_torch(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    split = meta.split
    out = q.new_empty(q.shape[0], q.shape[1], v_cache.shape[-1])
    if split.decode_meta is not None:
        rows = split.decode_rows
        out[rows] = gqa_decode_attention_torch(q.index_select(0, rows), k_cache, v_cache, split.decode_meta, scale)
    for span in split.prefills:
        k = gather_sequence(k_cache, meta, span.seq)  # (L, Hkv, D), the span's own rows included
        v = gather_sequence(v_cache, meta, span.seq)
        out[span.start : span.end] = causal_sdpa(q[span.start : span.end], k, v, scale)
    return out


def gqa_prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    meta: AttentionMetadata, scale: float,
) -> torch.Tensor:
    """A step that is not pure decode, on the "torch" or "triton" backend; k, v are the step's own rows."""
    if meta.no_cached_context:  # the new K/V are the whole context, read as the cache holds them
        return prefill_attention_sdpa(q, as_cached(k, k_cache), as_cached(v, v_cache), meta, scale)
    if meta.backend == "triton":
        from lab.engine.kernels.varlen_attention import gqa_varlen_triton  # CUDA only

        return gqa_varlen_triton(
            q, k_cache, v_cache, meta.block_tables_tensor, meta.seq_lens_tensor, meta.query_start_loc_tensor,
            scale, meta.max_query_len,
        )
    return gqa_mixed_attention_torch(q, k_cache, v_cache, meta, scale)
