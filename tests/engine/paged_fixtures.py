"""Random paged caches for attention tests: shuffled blocks, mixed lengths, one decode query each.

`random_decode_case(...)` returns (q, caches, meta) where meta carries both the Python lists (read
by the per-sequence oracles) and the step's device tensors (read by the vectorized and Triton paths).
Shared by the CPU tests (`test_decode_attention.py`) and the GPU kernel tests.
"""
from __future__ import annotations

import random

import torch

from lab.engine.attention import AttentionMetadata, build_step_tensors


def random_decode_meta(seq_lens: list[int], block_size: int, num_blocks: int, device, seed: int = 0, width=None) -> AttentionMetadata:
    """One decode query per sequence; blocks handed out in shuffled order so tables are non-contiguous."""
    free = list(range(num_blocks))
    random.Random(seed).shuffle(free)
    tables, slots = [], []
    for n in seq_lens:
        table = [free.pop() for _ in range((n + block_size - 1) // block_size)]
        tables.append(table)
        pos = n - 1  # the new token is the last of the context
        slots.append(table[pos // block_size] * block_size + pos % block_size)
    meta = AttentionMetadata(
        query_start_loc=list(range(len(seq_lens) + 1)),
        seq_lens=list(seq_lens),
        block_tables=tables,
        slot_mapping=torch.tensor(slots, device=device),
        block_size=block_size,
        backend="torch",
        pure_decode=True,
    )
    build_step_tensors(meta, torch.device(device), width=width)
    return meta


def random_caches(shapes: list[tuple[int, ...]], num_blocks: int, block_size: int, dtype, device, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(num_blocks, block_size, *s, generator=gen).to(device=device, dtype=dtype) for s in shapes]
