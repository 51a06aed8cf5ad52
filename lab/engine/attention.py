"""Paged attention, pure torch: the correctness oracle for the GPU kernels to come.

Layout (as vLLM's): a step's T new tokens are flattened across sequences; sequence i owns
rows `query_start_loc[i]:query_start_loc[i+1]`. Its keys live in the paged cache: token at
position p is in block `block_tables[i][p // block_size]`, row `p % block_size`. A layer first
writes its new K/V rows at `slot_mapping` and then attends over the whole context, so prefill,
chunked prefill and decode take the same path.

Cache tensors have shape (num_blocks, block_size, *per_token_shape).

`AttentionMetadata` carries the step twice: as Python lists (read by this per-sequence oracle)
and, when the runner builds them, as device tensors built once per step (padded block table,
seq lens, query starts) that the vectorized and Triton paths read without any Python loop over
sequences (`decode_attention.py`, `kernels/`). `backend` names which path a layer takes:
"reference" (this file's loops), "torch" (vectorized torch) or "triton" (CUDA kernels).

A step that is not pure decode can be seen as two parts (`AttentionMetadata.split`, computed once
per step from the lists and cached): its one-token sequences, as a pure-decode step of their own
(`StepSplit.decode_meta`), and its longer query spans (`PrefillSpan`: prefill chunks, possibly
over cached context). The torch and MLA mixed-step paths attend to the two parts separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class AttentionMetadata:
    query_start_loc: list[int]  # B + 1 offsets into the flat token dimension
    seq_lens: list[int]  # per sequence: tokens in context after this step (computed + new)
    block_tables: list[list[int]]  # per sequence: its KV block ids, in position order
    slot_mapping: torch.Tensor  # (T,) int64: flat cache row of each new token (-1: padding, skipped by kernels)
    block_size: int
    # Built once per step on the device by `build_step_tensors` (None: only the oracle can run).
    block_tables_tensor: torch.Tensor | None = None  # (B, W) int32, rows padded with block 0
    seq_lens_tensor: torch.Tensor | None = None  # (B,) int32; 0 for padding rows of a graph batch
    query_start_loc_tensor: torch.Tensor | None = None  # (B + 1,) int32
    backend: str = "reference"  # "reference" | "torch" | "triton"
    no_cached_context: bool = False  # every sequence starts at position 0: prefill may skip the cache read
    pure_decode: bool | None = None  # set once per step by the runner; None: derived from the lists

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)

    @cached_property
    def max_query_len(self) -> int:
        """The longest query span of the step (host int, computed once per step)."""
        return max(self.query_lens(), default=0)

    @cached_property
    def split(self) -> StepSplit:
        """The step's decode rows and prefill spans (computed once per step; layers share it)."""
        return split_step(self)

    def query_lens(self) -> list[int]:
        q = self.query_start_loc
        return [q[i + 1] - q[i] for i in range(len(q) - 1)]

    @property
    def is_pure_decode(self) -> bool:
        if self.pure_decode is not None:
            return self.pure_decode  # every layer asks: don't walk B query lengths L times a step
        return all(n == 1 for n in self.query_lens())


ATTENTION_BACKENDS = ("reference", "torch", "triton")


@dataclass(frozen=True)
class PrefillSpan:
    """A sequence of the step with more than one query row (a prefill chunk)."""

    seq: int  # index of the sequence in the step
    start: int  # its rows start:end in the flat token dimension
    end: int
    seq_len: int  # its context after this step; the queries sit at positions seq_len - (end - start) ..


@dataclass
class StepSplit:
    decode_rows: torch.Tensor  # (Bd,) long, on the step's device: flat rows of the one-token sequences
    decode_meta: AttentionMetadata | None  # those sequences as a pure-decode step; None when Bd == 0
    prefills: list[PrefillSpan]


def split_step(meta: AttentionMetadata) -> StepSplit:
    """Separate one-token sequences from longer spans; one host pass, one small asynchronous copy per tensor."""
    device = meta.slot_mapping.device
    starts = meta.query_start_loc
    decode_seqs = [i for i in range(meta.num_seqs) if starts[i + 1] - starts[i] == 1]
    prefills = [
        PrefillSpan(i, starts[i], starts[i + 1], meta.seq_lens[i])
        for i in range(meta.num_seqs)
        if starts[i + 1] - starts[i] > 1
    ]
    decode_rows = _long_to_device([starts[i] for i in decode_seqs], device)
    if not decode_seqs:
        return StepSplit(decode_rows, None, prefills)
    decode_meta = AttentionMetadata(
        query_start_loc=list(range(len(decode_seqs) + 1)),
        seq_lens=[meta.seq_lens[i] for i in decode_seqs],
        block_tables=[meta.block_tables[i] for i in decode_seqs],
        slot_mapping=meta.slot_mapping.index_select(0, decode_rows),
        block_size=meta.block_size,
        backend=meta.backend,
        pure_decode=True,
    )
    if meta.block_tables_tensor is None:
        build_step_tensors(decode_meta, device)
    else:  # rows of the step's tensors: no second host-to-device copy of the tables
        seqs = _long_to_device(decode_seqs, device)
        decode_meta.block_tables_tensor = meta.block_tables_tensor.index_select(0, seqs)
        decode_meta.seq_lens_tensor = meta.seq_lens_tensor.index_select(0, seqs)
        decode_meta.query_start_loc_tensor = torch.arange(len(decode_seqs) + 1, dtype=torch.int32, device=device)
    return StepSplit(decode_rows, decode_meta, prefills)


def _long_to_device(values: list[int], device: torch.device) -> torch.Tensor:
    """A host list as an int64 tensor on `device`, without blocking the host on CUDA.

    A copy from pageable memory goes through the driver's staging buffer and may wait for the
    stream (behind the step's queued kernels), so the source is pinned and the copy asynchronous.
    The pinned tensor may be dropped at once: it comes from PyTorch's caching host allocator, and
    the CUDA copy records an event on its stream for that block (`CachingHostAllocator_recordEvent`
    in copy_kernel_cuda), so the block is not handed out again before the copy has completed.
    Kernels that read the result are queued after the copy on the same (current) stream.
    """
    if device.type != "cuda":
        return torch.tensor(values, dtype=torch.long, device=device)
    return torch.tensor(values, dtype=torch.long, pin_memory=True).to(device, non_blocking=True)


def build_step_tensors(meta: AttentionMetadata, device: torch.device, width: int | None = None) -> None:
    """Fill meta's tensor fields from its lists: one host-to-device copy per tensor, no per-token work.

    `width` pads the block table to a fixed number of columns (a CUDA graph needs fixed shapes);
    by default it is the longest table needed this step.
    """
    bs = meta.block_size
    needed = [(n + bs - 1) // bs for n in meta.seq_lens]
    width = width if width is not None else max(needed, default=1)
    width = max(width, 1)
    rows = [t[:n] + [0] * (width - n) for t, n in zip(meta.block_tables, needed)]  # one tensor() call, not B
    meta.block_tables_tensor = torch.tensor(rows, dtype=torch.int32).to(device, non_blocking=True)
    meta.seq_lens_tensor = torch.tensor(meta.seq_lens, dtype=torch.int32).to(device, non_blocking=True)
    meta.query_start_loc_tensor = torch.tensor(meta.query_start_loc, dtype=torch.int32).to(device, non_blocking=True)


def write_to_cache(cache: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    """Store `values` (T, *per_token_shape) at the flat rows `slot_mapping` of `cache`."""
    flat = cache.view(-1, *cache.shape[2:])  # (num_blocks * block_size, *per_token_shape)
    flat.index_copy_(0, slot_mapping, values.to(cache.dtype))


def gather_from_cache(cache: torch.Tensor, block_table: list[int], seq_len: int) -> torch.Tensor:
    """The first `seq_len` cached rows of one sequence, in position order: (seq_len, *shape)."""
    block_size = cache.shape[1]
    num_blocks = (seq_len + block_size - 1) // block_size
    ids = torch.tensor(block_table[:num_blocks], dtype=torch.long, device=cache.device)
    return cache.index_select(0, ids).flatten(0, 1)[:seq_len]


def gather_sequence(cache: torch.Tensor, meta: AttentionMetadata, seq: int) -> torch.Tensor:
    """Sequence `seq`'s cached rows in position order, (seq_len, *shape), from the device block table if built."""
    if meta.block_tables_tensor is None:
        return gather_from_cache(cache, meta.block_tables[seq], meta.seq_lens[seq])
    seq_len = meta.seq_lens[seq]
    num_blocks = (seq_len + cache.shape[1] - 1) // cache.shape[1]
    ids = meta.block_tables_tensor[seq, :num_blocks]  # a view: no host-to-device copy
    return cache.index_select(0, ids).flatten(0, 1)[:seq_len]


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
