"""BlockManager: block counts at boundaries, free-list reuse, reference counts, errors."""
from __future__ import annotations

import pytest

from lab.engine.block_manager import BlockManager, BlockManagerError
from lab.engine.sampling_params import SamplingParams
from lab.engine.sequence import Sequence


def make_seq(request_id: str = "r", num_prompt_tokens: int = 1) -> Sequence:
    return Sequence(request_id, list(range(num_prompt_tokens)), SamplingParams(), arrival_time=0.0)


@pytest.mark.parametrize(
    ("num_tokens", "expected_blocks"),
    [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)],
)
def test_blocks_needed_at_block_boundaries(num_tokens: int, expected_blocks: int) -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    assert bm.blocks_needed(make_seq(), num_tokens) == expected_blocks


def test_allocate_extends_from_computed_tokens() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    seq = make_seq(num_prompt_tokens=10)
    bm.allocate(seq, 4)  # positions 0..3: one block
    assert seq.block_table == [0]
    seq.num_computed_tokens = 4
    bm.allocate(seq, 1)  # position 4 opens block 2
    assert seq.block_table == [0, 1]
    seq.num_computed_tokens = 5
    bm.allocate(seq, 3)  # positions 5..7 stay in block 2
    assert seq.block_table == [0, 1]
    assert bm.blocks_needed(seq, 9) == 1
    assert (bm.num_free_blocks, bm.num_used_blocks) == (8, 2)
    assert bm.usage == pytest.approx(0.2)


def test_can_allocate_counts_free_blocks_exactly() -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    seq = make_seq()
    assert bm.can_allocate(seq, 12)
    assert not bm.can_allocate(seq, 13)
    with pytest.raises(BlockManagerError, match="needs 4 more blocks"):
        bm.allocate(seq, 13)
    assert seq.block_table == [] and bm.num_free_blocks == 3  # a failed allocate changes nothing


def test_freed_blocks_are_reused_after_the_untouched_ones() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a, b = make_seq("a"), make_seq("b")
    bm.allocate(a, 4)
    assert a.block_table == [0, 1]
    bm.free(a)
    assert a.block_table == [] and bm.num_free_blocks == 4
    bm.allocate(b, 8)  # never-used blocks first, then a's, tail block first
    assert b.block_table == [2, 3, 1, 0]
    assert bm.usage == 1.0


def test_fork_shares_blocks_until_both_are_freed() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    parent, child = make_seq("parent"), make_seq("child")
    bm.allocate(parent, 3)
    bm.fork(parent, child)
    assert child.block_table == [0, 1]
    assert [bm.ref_count(b) for b in (0, 1)] == [2, 2]
    assert bm.num_free_blocks == 2
    bm.free(parent)
    assert [bm.ref_count(b) for b in (0, 1)] == [1, 1]
    assert bm.num_free_blocks == 2  # still held by the child
    bm.free(child)
    assert bm.num_free_blocks == 4


def test_fork_into_a_sequence_with_blocks_is_refused() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    parent, child = make_seq("parent"), make_seq("child")
    bm.allocate(parent, 2)
    bm.allocate(child, 2)
    with pytest.raises(BlockManagerError, match="already holds"):
        bm.fork(parent, child)


def test_double_free_is_an_error_and_changes_nothing() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a, b = make_seq("a"), make_seq("b")
    bm.allocate(a, 4)
    table = list(a.block_table)
    bm.free(a)
    bm.allocate(b, 2)  # b takes block 2, a's old blocks stay free
    a.block_table = table
    with pytest.raises(BlockManagerError, match="double free"):
        bm.free(a)
    assert bm.num_free_blocks == 3 and b.block_table == [2]


def test_freeing_a_foreign_block_id_is_an_error() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    seq = make_seq()
    seq.block_table = [7]
    with pytest.raises(BlockManagerError, match="not in this cache"):
        bm.free(seq)


def test_free_of_an_empty_table_is_a_noop() -> None:
    bm = BlockManager(num_blocks=2, block_size=2)
    bm.free(make_seq())
    assert bm.num_free_blocks == 2


def test_slot_maps_positions_through_the_block_table() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq()
    seq.block_table = [5, 2]
    assert bm.slot(seq, 0) == 20
    assert bm.slot(seq, 3) == 23
    assert bm.slot(seq, 4) == 8
    assert bm.slots(seq, 2, 6) == [22, 23, 8, 9]
    with pytest.raises(IndexError):
        bm.slot(seq, 8)
