"""`BlockManager`: paged KV-cache bookkeeping, torch-free.

The KV cache is `num_blocks` blocks of `block_size` token positions each. A sequence owns an
ordered `block_table`; the KV of its token at position p lives in block
`block_table[p // block_size]`, row `p % block_size` (flat cache row `slot(seq, p)`).

Contract:
- `allocate(seq, n)` extends `seq.block_table` so it covers `seq.num_computed_tokens + n`
  positions; `can_allocate(seq, n)` says beforehand whether the free list allows it. Prefill,
  chunked prefill, decode and recompute all use this one pair.
- Blocks carry reference counts so that several sequences may share one (`fork`, and later
  prefix caching). `free(seq)` drops one reference per block of its table, returns blocks that
  reach zero to the free list and clears the table. Freeing a block nobody holds, or an id that
  is not a block of this cache, raises `BlockManagerError` and changes nothing.
- Shared blocks are read-only by convention: writing into a shared last block would need
  copy-on-write, which is not implemented yet (forks are for sampling several continuations
  from a prompt whose last block is full, or for prefix caching of full blocks).
"""
from __future__ import annotations

from collections import Counter, deque

from lab.engine.sequence import Sequence


class BlockManagerError(RuntimeError):
    """A bookkeeping rule was broken: out of blocks, double free, or a foreign block id."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self._num_blocks = num_blocks
        # Freed blocks go to the back, allocation takes from the front: a freed block is
        # reused last, which keeps its contents around longest (what prefix caching wants).
        self._free: deque[int] = deque(range(num_blocks))
        self._ref_counts: list[int] = [0] * num_blocks

    # ---- capacity -------------------------------------------------------------------------

    @property
    def num_total_blocks(self) -> int:
        return self._num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self._num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, in [0, 1] (`vllm:kv_cache_usage_perc`)."""
        return self.num_used_blocks / self._num_blocks

    def blocks_for_positions(self, num_positions: int) -> int:
        """Blocks that hold `num_positions` token positions."""
        return -(-num_positions // self.block_size)  # ceiling division

    def ref_count(self, block_id: int) -> int:
        self._check_block_id(block_id)
        return self._ref_counts[block_id]

    # ---- allocation -----------------------------------------------------------------------

    def blocks_needed(self, seq: Sequence, num_tokens_total: int) -> int:
        """Additional blocks seq.block_table needs to cover `num_tokens_total` positions."""
        return max(0, self.blocks_for_positions(num_tokens_total) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        needed = self.blocks_needed(seq, seq.num_computed_tokens + num_new_tokens)
        return needed <= len(self._free)

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Extend seq.block_table to cover `seq.num_computed_tokens + num_new_tokens` positions."""
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        target = seq.num_computed_tokens + num_new_tokens
        needed = self.blocks_needed(seq, target)
        if needed > len(self._free):
            raise BlockManagerError(
                f"request {seq.request_id!r} needs {needed} more blocks to cover {target} positions "
                f"but only {len(self._free)} of {self._num_blocks} are free"
            )
        for _ in range(needed):
            block_id = self._free.popleft()
            self._ref_counts[block_id] = 1
            seq.block_table.append(block_id)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share all of `parent`'s blocks (one more reference each)."""
        if child.block_table:
            raise BlockManagerError(
                f"fork target {child.request_id!r} already holds {len(child.block_table)} blocks"
            )
        for block_id in parent.block_table:
            if self.ref_count(block_id) == 0:
                raise BlockManagerError(f"fork from {parent.request_id!r}: block {block_id} is free")
        for block_id in parent.block_table:
            self._ref_counts[block_id] += 1
        child.block_table = list(parent.block_table)

    def free(self, seq: Sequence) -> None:
        """Drop seq's reference to each of its blocks and clear its table (no-op when empty)."""
        # Validate everything first so that a bad table leaves the manager untouched.
        for block_id, count in Counter(seq.block_table).items():
            if self.ref_count(block_id) < count:
                raise BlockManagerError(
                    f"request {seq.request_id!r} frees block {block_id} which has "
                    f"{self._ref_counts[block_id]} references (double free?)"
                )
        # Reverse order: a sequence's tail blocks are the least likely to be shared by a
        # prefix, so they are queued for reuse first.
        for block_id in reversed(seq.block_table):
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._free.append(block_id)
        seq.block_table = []

    # ---- addressing -----------------------------------------------------------------------

    def slot(self, seq: Sequence, position: int) -> int:
        """Flat cache row of seq's token at `position`."""
        index = position // self.block_size
        if position < 0 or index >= len(seq.block_table):
            raise IndexError(
                f"position {position} of request {seq.request_id!r} is outside its "
                f"{len(seq.block_table)} blocks of {self.block_size}"
            )
        return seq.block_table[index] * self.block_size + position % self.block_size

    def slots(self, seq: Sequence, start: int, end: int) -> list[int]:
        """Flat cache rows of positions start..end-1 (a scheduled chunk's slot mapping)."""
        return [self.slot(seq, p) for p in range(start, end)]

    def _check_block_id(self, block_id: int) -> None:
        if not 0 <= block_id < self._num_blocks:
            raise BlockManagerError(f"block id {block_id} is not in this cache of {self._num_blocks} blocks")
