"""Random paged caches and steps for attention tests: shuffled blocks, mixed lengths.

`random_decode_meta` (one decode query per sequence) and `random_step_meta` (any mix of decode
rows, prefills and chunks over cached context) return metadata carrying both the Python lists (read
by the per-sequence oracles) and the step's device tensors (read by the vectorized and Triton
paths); `model_step_outputs` runs one such step through a whole model per attention backend.
Shared by the CPU tests (`test_decode_attention.py`, `test_kernels_interpret.py`) and the GPU tests.
"""
from __future__ import annotations

import random

import torch

from lab.engine.attention.metadata import AttentionMetadata, build_step_tensors
from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.loader import load_model

# r1-distill-qwen-1.5b's architecture at CPU-test size: 4 query heads over 2 KV heads of 32 dims
SMALL_QWEN = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512)


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


def random_step_meta(
    query_lens: list[int], seq_lens: list[int], block_size: int, num_blocks: int, device, seed: int = 0,
    backend: str = "torch",
) -> AttentionMetadata:
    """A mixed step: sequence i has seq_lens[i] tokens of context after the step, the last query_lens[i] new.

    Query length 1 is a decode row, query length == seq len a prefill from position 0, anything
    between a chunk over cached context. Blocks are handed out shuffled, as in `random_decode_meta`.
    """
    free = list(range(num_blocks))
    random.Random(seed).shuffle(free)
    tables, slots, starts = [], [], [0]
    for q_len, n in zip(query_lens, seq_lens):
        assert 1 <= q_len <= n
        table = [free.pop() for _ in range((n + block_size - 1) // block_size)]
        tables.append(table)
        slots += [table[p // block_size] * block_size + p % block_size for p in range(n - q_len, n)]
        starts.append(starts[-1] + q_len)
    meta = AttentionMetadata(
        query_start_loc=starts,
        seq_lens=list(seq_lens),
        block_tables=tables,
        slot_mapping=torch.tensor(slots, device=device),
        block_size=block_size,
        backend=backend,
        no_cached_context=all(q == n for q, n in zip(query_lens, seq_lens)),
        pure_decode=all(q == 1 for q in query_lens),
    )
    build_step_tensors(meta, torch.device(device))
    return meta


def model_step_outputs(
    model_name: str, overrides: dict, step: tuple[list[int], list[int]], block_size: int,
    backends=("reference", "torch"), device: str = "cpu", num_blocks: int = 64,
) -> dict[str, torch.Tensor]:
    """One step (query lens, seq lens) through a whole float32 model over a random paged cache: hidden states per backend.

    The cached context is random (the same for every backend); the step's own rows are written by the layers.
    """
    torch.manual_seed(0)
    model = load_model(model_name, torch.float32, device, hf_overrides=overrides).module
    spec = model.kv_cache_spec(torch.float32)
    caches = [tuple(c.normal_() for c in layer) for layer in allocate_kv_cache(spec, num_blocks, block_size, torch.device(device))]
    query_lens, seq_lens = step
    ids = torch.randint(2, 500, (sum(query_lens),), device=device)
    positions = torch.tensor([p for q, n in zip(query_lens, seq_lens) for p in range(n - q, n)], device=device)
    outs = {}
    for backend in backends:
        meta = random_step_meta(query_lens, seq_lens, block_size, num_blocks, device, seed=7, backend=backend)
        step_caches = [tuple(c.clone() for c in layer) for layer in caches]
        with torch.inference_mode():
            outs[backend] = model(ids, positions, step_caches, meta)
    return outs
