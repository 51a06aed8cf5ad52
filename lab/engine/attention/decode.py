"""Decode attention without a Python loop over sequences: vectorized torch, or Triton on CUDA.

Contract: one query row per sequence (a pure-decode step, T == B). Both paths read the step's
device tensors in `AttentionMetadata` (`build_step_tensors`): the padded block table (B, W) and
seq lens (B,). A row whose seq len is 0 (padding of a CUDA-graph batch) returns zeros.
  gqa_decode_attention(q (B, H, D), k_cache, v_cache, meta, scale) -> (B, H, Dv)
  mla_decode_attention(q (B, H, R + rope), cache, meta, rank, scale) -> (B, H, R)
    (MLA with absorbed weights: scores against whole latent rows [c_kv | k_pe], values = c_kv)
The torch path gathers every sequence's blocks into one padded (B, W * block_size, ...) tensor and
masks positions >= seq len before a float32 softmax: the same math as the per-sequence oracle
(`reference.paged_attention`, `reference.latent_attention`), which tests compare it with. It reads
W * block_size rows per sequence, so it suits eager steps; CUDA graphs use the Triton kernels,
whose cost follows each sequence's own length.
An 8-bit cache (`kv_quant.QuantizedCache`) is read dequantized (torch) or dequantized in registers
(Triton); `cache_write` quantizes as it writes (`kv_quant.write_rows` / the Triton writer).
"""
from __future__ import annotations

import torch

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_quant import read_blocks


def _valid_positions(meta: AttentionMetadata, num_positions: int, device: torch.device) -> torch.Tensor:
    """(B, L) bool: position l of sequence b holds a key (l < seq_len[b])."""
    return torch.arange(num_positions, device=device)[None, :] < meta.seq_lens_tensor[:, None]


def _masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of (B, ..., L) with invalid keys dropped; all-invalid rows give 0."""
    scores = scores.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)  # a padding row (seq len 0) is all -inf -> NaN -> 0


def gqa_decode_attention_torch(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    table = meta.block_tables_tensor.long()  # (B, W)
    k = read_blocks(k_cache, table).flatten(1, 2).float()  # (B, L = W * block_size, Hkv, D)
    v = read_blocks(v_cache, table).flatten(1, 2).float()  # (B, L, Hkv, Dv)
    qg = q.float().view(batch, num_kv_heads, group, head_dim)  # head h = kv_head * group + g, as repeat_interleave
    scores = torch.einsum("bkgd,blkd->bkgl", qg, k) * scale  # (B, Hkv, G, L)
    valid = _valid_positions(meta, k.shape[1], q.device)[:, None, None, :]
    probs = _masked_softmax(scores, valid)
    out = torch.einsum("bkgl,blkd->bkgd", probs, v)  # (B, Hkv, G, Dv)
    return out.reshape(batch, num_heads, -1).to(q.dtype)


def mla_decode_attention_torch(
    q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata, rank: int, scale: float
) -> torch.Tensor:
    ctx = read_blocks(cache, meta.block_tables_tensor.long()).flatten(1, 2).float()  # (B, L, R + rope)
    scores = torch.einsum("bhd,bld->bhl", q.float(), ctx) * scale  # (B, H, L)
    valid = _valid_positions(meta, ctx.shape[1], q.device)[:, None, :]
    probs = _masked_softmax(scores, valid)
    return torch.einsum("bhl,blr->bhr", probs, ctx[..., :rank]).to(q.dtype)  # (B, H, R)


def gqa_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Dispatch on meta.backend: "triton" (CUDA kernels) or the vectorized torch path."""
    if meta.backend == "triton":
        from lab.engine.kernels.paged_decode import gqa_decode_triton  # CUDA only: triton never loads on CPU

        return gqa_decode_triton(q, k_cache, v_cache, meta.block_tables_tensor, meta.seq_lens_tensor, scale)
    return gqa_decode_attention_torch(q, k_cache, v_cache, meta, scale)


def mla_decode_attention(q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata, rank: int, scale: float) -> torch.Tensor:
    if meta.backend == "triton":
        from lab.engine.kernels.mla_decode import mla_decode_triton

        return mla_decode_triton(q, cache, meta.block_tables_tensor, meta.seq_lens_tensor, rank, scale)
    return mla_decode_attention_torch(q, cache, meta, rank, scale)


def cache_write(cache: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor, meta: AttentionMetadata) -> None:
    """Store `values` (T, *per_token_shape) at `slot_mapping`; the Triton kernel skips slots < 0 (padding)."""
    if meta.backend == "triton":
        from lab.engine.kernels.kv_write import write_kv_triton

        write_kv_triton(cache, slot_mapping, values)
        return
    from lab.engine.attention.reference import write_to_cache

    write_to_cache(cache, slot_mapping, values)
