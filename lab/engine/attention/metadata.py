"""What one step tells every attention layer: `AttentionMetadata`, its decode/prefill split, its device tensors.

`AttentionMetadata` carries the step twice: as Python lists (read by the per-sequence oracle in
`reference.py`; layout there) and, when the runner builds them (`build_step_tensors`), as device
tensors built once per step (padded block table, seq lens, query starts) that the vectorized and
Triton paths read without any Python loop over sequences (`decode.py`, `prefill.py`,
`lab/engine/kernels/`). `backend` names which path a layer takes: "reference" (the oracle's loops),
"torch" (vectorized torch) or "triton" (CUDA kernels).

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
