"""CUDA graphs for decode steps, in batch-size buckets (nano-vllm's scheme).

Why: a decode step of a small model is ~1 ms of GPU work spread over hundreds of kernels; launching
them from Python costs about as much again. A graph replays the whole forward in one launch.

Contract: `DecodeGraphs(model, kv_caches, ...)` captures `model.forward` for every bucket size
(largest first, all into one memory pool, so the buckets share activation memory) on static input
buffers. `can_run(meta)` says whether a step fits: pure decode, at most the largest bucket, every
context within `max_model_len`. `run(input_ids, positions, meta)` copies the step into the buffers,
pads the batch to its bucket (padding rows: slot -1 so they write no cache, seq len 0 so they
attend to nothing), replays, and returns hidden (B, hidden) — a view of the graph's output, valid
until the next replay. The eager forward with the same backend is the reference (`enforce_eager`).
Only the Triton backend is captured: its cost follows each sequence's own length while the block
table is padded to the full `max_model_len` width, and its cache write skips padding rows.
"""
from __future__ import annotations

import time

import torch

from lab.engine.attention import AttentionMetadata


def bucket_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then steps of 16 up to max_num_seqs (which is always a bucket)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sorted(set(sizes + [max_num_seqs]))


class DecodeGraphs:
    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[tuple[torch.Tensor, ...]],
        block_size: int,
        max_num_seqs: int,
        max_model_len: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.buckets = bucket_sizes(max_num_seqs)
        self.width = (max_model_len + block_size - 1) // block_size  # block-table columns, fixed
        b = self.buckets[-1]
        to = dict(device=device)
        self.input_ids = torch.zeros(b, dtype=torch.long, **to)
        self.positions = torch.zeros(b, dtype=torch.long, **to)
        self.slot_mapping = torch.full((b,), -1, dtype=torch.long, **to)
        self.block_tables = torch.zeros(b, self.width, dtype=torch.int32, **to)
        self.seq_lens = torch.zeros(b, dtype=torch.int32, **to)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0

    def _meta(self, batch: int) -> AttentionMetadata:
        return AttentionMetadata(
            query_start_loc=list(range(batch + 1)),
            seq_lens=[1] * batch,  # only steers Python-side dispatch during capture; kernels read the tensors
            block_tables=[[0]] * batch,
            slot_mapping=self.slot_mapping[:batch],
            block_size=self.block_size,
            block_tables_tensor=self.block_tables[:batch],
            seq_lens_tensor=self.seq_lens[:batch],
            backend="triton",
            pure_decode=True,
        )

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every bucket, largest first into one pool; returns the seconds it took."""
        start = time.perf_counter()
        self.slot_mapping.fill_(-1)  # warm-up and capture runs must not touch the cache
        self.seq_lens.zero_()
        pool = None
        for batch in reversed(self.buckets):
            meta = self._meta(batch)
            args = (self.input_ids[:batch], self.positions[:batch], self.kv_caches, meta)
            self.model(*args)  # warm-up: Triton compiles, cuBLAS picks its kernels, outside the graph
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[batch] = self.model(*args)
            pool = graph.pool() if pool is None else pool
            self.graphs[batch] = graph
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - start
        return self.capture_s

    def can_run(self, meta: AttentionMetadata) -> bool:
        return (
            bool(self.graphs)
            and meta.is_pure_decode
            and meta.num_seqs <= self.buckets[-1]
            and meta.block_tables_tensor is not None
            and meta.block_tables_tensor.shape[1] <= self.width
        )

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        batch = meta.num_seqs
        bucket = next(b for b in self.buckets if b >= batch)
        width = meta.block_tables_tensor.shape[1]
        self.input_ids[:batch].copy_(input_ids)
        self.positions[:batch].copy_(positions)
        self.slot_mapping[:batch].copy_(meta.slot_mapping)
        self.slot_mapping[batch:bucket].fill_(-1)
        self.block_tables[:batch, :width].copy_(meta.block_tables_tensor)  # columns past width: never read
        self.seq_lens[:batch].copy_(meta.seq_lens_tensor)
        self.seq_lens[batch:bucket].zero_()
        self.graphs[bucket].replay()
        return self.outputs[bucket][:batch]
