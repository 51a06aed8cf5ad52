"""The host-side fast paths equal their plain definitions.

- `ModelRunner.prepare_inputs` (numpy, mirrored block tables) equals the per-token loop plus
  `build_step_tensors`, for mixed prefill/decode steps and after a table is replaced (preemption).
- Batched detokenization (`push`/`windows`/`accept` with memoized one-token windows) equals `add`.
- A snapshot `CompletionOutput` reads like an eager one and does not change as its sources grow.
"""
from __future__ import annotations

import random

import pytest
import torch

from lab.engine.attention.metadata import AttentionMetadata, build_step_tensors
from lab.engine.detokenizer import IncrementalDetokenizer, decode_windows
from lab.engine.outputs import CompletionOutput
from lab.engine.runner import BlockTableRows, ModelRunner
from lab.engine.sampling_params import SamplingParams
from lab.engine.scheduler import ScheduledChunk, SchedulerOutput
from lab.engine.sequence import Sequence


def _oracle(output: SchedulerOutput, bs: int):
    """The plain per-token construction (the runner's previous implementation)."""
    ids, positions, slots, qsl, seq_lens, tables = [], [], [], [0], [], []
    for chunk in output.scheduled:
        seq = chunk.seq
        tokens = seq.token_ids
        for pos in range(chunk.start_position, chunk.end_position):
            ids.append(tokens[pos])
            positions.append(pos)
            slots.append(seq.block_table[pos // bs] * bs + pos % bs)
        qsl.append(len(ids))
        seq_lens.append(chunk.end_position)
        tables.append(seq.block_table)
    meta = AttentionMetadata(qsl, seq_lens, tables, torch.tensor(slots), bs)
    build_step_tensors(meta, torch.device("cpu"))
    return ids, positions, meta


def _seq(rid: str, rng: random.Random, prompt_len: int, num_out: int, computed: int, bs: int, next_block: list[int]) -> Sequence:
    seq = Sequence(rid, [rng.randrange(1000) for _ in range(prompt_len)], SamplingParams(), 0.0)
    seq.output_token_ids = [rng.randrange(1000) for _ in range(num_out)]
    seq.num_computed_tokens = computed
    for _ in range(-(-seq.num_tokens // bs) + 1):  # one spare block: padding must still be 0
        seq.block_table.append(next_block[0])
        next_block[0] += 3
    return seq


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_prepare_inputs_equals_the_per_token_loop(backend):
    bs, rng, next_block = 4, random.Random(0), [5]
    runner = ModelRunner(None, [], bs, torch.device("cpu"), None, attention_backend=backend)
    seqs = [
        _seq("decode", rng, 9, 3, 11, bs, next_block),  # one new token
        _seq("prefill", rng, 13, 0, 0, bs, next_block),  # a whole prompt
        _seq("chunk", rng, 30, 0, 8, bs, next_block),  # a middle chunk of a prompt
        _seq("recompute", rng, 5, 6, 0, bs, next_block),  # prompt + outputs after preemption
    ]
    for step in range(3):
        chunks = [ScheduledChunk(s, n) for s, n in zip(seqs, (1, 13, 10, 11))]
        output = SchedulerOutput(chunks, [], [], sum(c.num_new_tokens for c in chunks))
        ids, positions, meta = _oracle(output, bs)
        got = runner.prepare_inputs(output)
        assert got.input_ids.tolist() == ids and got.positions.tolist() == positions
        assert got.meta.slot_mapping.tolist() == meta.slot_mapping.tolist()
        assert got.meta.query_start_loc == meta.query_start_loc and got.meta.seq_lens == meta.seq_lens
        assert got.meta.block_tables == meta.block_tables
        assert got.meta.no_cached_context is False and got.meta.pure_decode is False
        assert got.sample_rows == [0, 13, 34] and [c.seq.request_id for c in got.sample_chunks] == ["decode", "prefill", "recompute"]
        if backend == "reference":
            assert got.meta.block_tables_tensor is None
        else:
            for name in ("block_tables_tensor", "seq_lens_tensor", "query_start_loc_tensor"):
                ours, ref = getattr(got.meta, name), getattr(meta, name)
                assert ours.dtype == ref.dtype and torch.equal(ours, ref), name
        # Between steps tables grow and one is replaced by a new list (preemption frees it).
        seqs[0].block_table.append(next_block[0])
        seqs[3].block_table = [b + 1000 for b in seqs[3].block_table]


def test_block_table_rows_grow_and_reuse_rows():
    rows = BlockTableRows(rows=1, width=2)
    a = Sequence("a", [1], SamplingParams(), 0.0, block_table=[7, 8, 9])
    b = Sequence("b", [1], SamplingParams(), 0.0, block_table=[4])
    ra, rb = rows.row_for(a), rows.row_for(b)
    assert ra != rb and rows.array[ra, :3].tolist() == [7, 8, 9] and rows.array[rb, 0] == 4
    rows.release("a")
    c = Sequence("c", [1], SamplingParams(), 0.0, block_table=[1, 2])
    assert rows.row_for(c) == ra and rows.array[ra, :2].tolist() == [1, 2]


@pytest.fixture(scope="module")
def tokenizer():
    from lab.engine.tokenizer import Tokenizer

    return Tokenizer.deepseek()


def test_batched_detokenization_equals_add(tokenizer):
    text = "Hello wörld 👋🏽 — naïve café, 東京 🎉🎉 done."
    ids = tokenizer.encode(text)
    prompt = tokenizer.encode("Prompt: ")
    for stop in ((), ("café",), ("🎉",)):
        one = IncrementalDetokenizer(tokenizer, prompt, stop=stop)
        many = IncrementalDetokenizer(tokenizer, prompt, stop=stop)
        cache: dict[int, str] = {}
        for token in ids:
            expected = one.add(token)
            got = ""
            if many.push(token):
                windows = list(many.windows())
                got = many.accept(*decode_windows(tokenizer, windows, True, cache))
            assert got == expected
            assert many.text == one.text and many.stopped_by == one.stopped_by
        assert many.finish() == one.finish() and many.text == one.text


def test_completion_snapshot_reads_like_the_eager_output():
    tokens, text = [1, 2, 3], "abcdef"
    snap = CompletionOutput.snapshot(0, (text, 4), (tokens, 2), None)
    tokens.append(4)  # the sources grow after the snapshot
    assert snap.token_ids == [1, 2] and snap.text == "abcd" and snap.num_token_ids == 2
    assert snap == CompletionOutput(0, "abcd", [1, 2], None)
    with pytest.raises(AttributeError):
        snap.finish_reason = "stop"
