"""The reference attention paths, pure torch, one sequence at a time: the correctness oracle.

Every faster path (vectorized torch in `decode.py` and `prefill.py`, the Triton kernels in
`lab/engine/kernels/`) is tested against these functions on the same step. Layout (as vLLM's): a
step's T new tokens are flattened across sequences; sequence i owns rows
`query_start_loc[i]:query_start_loc[i+1]`; its keys live in the paged cache, token at position p in
block `block_tables[i][p // block_size]`, row `p % block_size`. A layer first writes its new rows at
`slot_mapping`, then attends over the whole context, so prefill, chunked prefill and decode take the
same path. Cache tensors have shape (num_blocks, block_size, *per_token_shape). An 8-bit cache
(`kv_quant.QuantizedCache`) is written through `kv_quant.write_rows` (codes + per-token scales) and read back
dequantized to the model dtype (`kv_quant.read_blocks`), so every path here runs on it unchanged.
  paged_attention(q (T, H, D), k_cache, v_cache, meta, scale) -> (T, H, Dv)      GQA
  latent_attention(q (T, H, R + rope), cache, meta, rank, scale) -> (T, H, R)     MLA, absorbed
  latent_decode_attention(q (B, H, R + rope), cache, meta, rank, scale) -> (B, H, R)
"""
from __future__ import annotations

import torch

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_quant import QuantizedCache, read_blocks, write_rows


def write_to_cache(cache: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    """Store `values` (T, *per_token_shape) at the flat rows `slot_mapping` of `cache`."""
    if isinstance(cache, QuantizedCache):
        write_rows(cache, slot_mapping, values)
        return
    flat = cache.view(-1, *cache.shape[2:])  # (num_blocks * block_size, *per_token_shape)
    flat.index_copy_(0, slot_mapping, values.to(cache.dtype))


def gather_from_cache(cache: torch.Tensor, block_table: list[int], seq_len: int) -> torch.Tensor:
    """The first `seq_len` cached rows of one sequence, in position order: (seq_len, *shape)."""
    block_size = cache.shape[1]
    num_blocks = (seq_len + block_size - 1) // block_size
    ids = torch.tensor(block_table[:num_blocks], dtype=torch.long, device=_device(cache))
    return read_blocks(cache, ids).flatten(0, 1)[:seq_len]


def gather_sequence(cache: torch.Tensor, meta: AttentionMetadata, seq: int) -> torch.Tensor:
    """Sequence `seq`'s cached rows in position order, (seq_len, *shape), from the device block table if built."""
    if meta.block_tables_tensor is None:
        return gather_from_cache(cache, meta.block_tables[seq], meta.seq_lens[seq])
    seq_len = meta.seq_lens[seq]
    num_blocks = (seq_len + cache.shape[1] - 1) // cache.shape[1]
    ids = meta.block_tables_tensor[seq, :num_blocks]  # a view: no host-to-device copy
    return read_blocks(cache, ids).flatten(0, 1)[:seq_len]


def _device(cache: torch.Tensor | QuantizedCache) -> torch.device:
    return cache.data.device if isinstance(cache, QuantizedCache) else cache.device


def causal_mask(q_len: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """(q_len, seq_len) bool: query j sits at position seq_len - q_len + j and sees keys <= it."""
    q_pos = torch.arange(seq_len - q_len, seq_len, device=device)[:, None]
    k_pos = torch.arange(seq_len, device=device)[None, :]
    return k_pos <= q_pos


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked softmax attention in float32. q (Q, H, D), k (L, H, D), v (L, H, Dv) -> (Q, H, Dv)."""
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def paged_attention(
    q: torch.Tensor,  # (T, H, D)
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, Dv)
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Grouped-query attention of the step's queries over their paged contexts: (T, H, Dv)."""
    num_heads, num_kv_heads = q.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = q.new_empty(q.shape[0], num_heads, v_cache.shape[-1])
    for i in range(meta.num_seqs):
        start, end = meta.query_start_loc[i], meta.query_start_loc[i + 1]
        seq_len = meta.seq_lens[i]
        k = gather_from_cache(k_cache, meta.block_tables[i], seq_len)  # (L, Hkv, D)
        v = gather_from_cache(v_cache, meta.block_tables[i], seq_len)
        if group > 1:
            k = k.repeat_interleave(group, dim=1)  # (L, H, D)
            v = v.repeat_interleave(group, dim=1)
        mask = causal_mask(end - start, seq_len, q.device)
        out[start:end] = attend(q[start:end], k, v, mask, scale)
    return out


def latent_attention(q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata, rank: int, scale: float) -> torch.Tensor:
    """Causal attention of q (T, H, R + rope) over each sequence's latent rows; values = c_kv. (T, H, R)."""
    out = q.new_empty(q.shape[0], q.shape[1], rank)
    for i in range(meta.num_seqs):
        start, end, seq_len = meta.query_start_loc[i], meta.query_start_loc[i + 1], meta.seq_lens[i]
        ctx = gather_from_cache(cache, meta.block_tables[i], seq_len).float()  # (L, R + rope)
        scores = torch.einsum("qhd,kd->hqk", q[start:end].float(), ctx) * scale
        scores = scores.masked_fill(~causal_mask(end - start, seq_len, q.device), float("-inf"))
        out[start:end] = torch.einsum("hqk,kr->qhr", scores.softmax(dim=-1), ctx[:, :rank]).to(q.dtype)
    return out


def latent_decode_attention(q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata, rank: int, scale: float) -> torch.Tensor:
    """One query per sequence, all sequences at once: contexts padded to the longest. (B, H, R)."""
    block_size = cache.shape[1]
    tables = [t[: (n + block_size - 1) // block_size] for t, n in zip(meta.block_tables, meta.seq_lens)]
    width = max(len(t) for t in tables)
    padded = torch.tensor([t + [t[0]] * (width - len(t)) for t in tables], dtype=torch.long, device=q.device)
    ctx = read_blocks(cache, padded).flatten(1, 2).float()  # (B, width * block_size, R + rope)
    scores = torch.einsum("bhd,bld->bhl", q.float(), ctx) * scale
    seq_lens = torch.tensor(meta.seq_lens, device=q.device)
    valid = torch.arange(ctx.shape[1], device=q.device)[None, :] < seq_lens[:, None]  # (B, L)
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.einsum("bhl,blr->bhr", scores.softmax(dim=-1), ctx[..., :rank]).to(q.dtype)
