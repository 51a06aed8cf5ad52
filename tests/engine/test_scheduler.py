"""Scheduler: token budget, chunking, seats, preemption, priority, deadlines, and a simulation."""
from __future__ import annotations

import random

import pytest

from lab.engine.block_manager import BlockManager
from lab.engine.config import SchedulerConfig
from lab.engine.sampling_params import SamplingParams
from lab.engine.scheduler import Scheduler, SchedulerOutput
from lab.engine.sequence import FinishReason, Priority, Sequence, SequenceStatus

TOKEN = 7  # what the fake runner samples


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_seq(request_id: str, num_prompt_tokens: int, *, arrival: float = 0.0, priority: int = 0,
             deadline: float | None = None) -> Sequence:
    return Sequence(request_id, list(range(100, 100 + num_prompt_tokens)), SamplingParams(max_tokens=64),
                    arrival_time=arrival, priority=priority, deadline=deadline)


def make_scheduler(*, num_blocks: int = 64, block_size: int = 4, max_num_seqs: int = 8,
                   max_num_batched_tokens: int = 32, chunked: bool = True, policy: str = "fcfs",
                   clock: FakeClock | None = None) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                             enable_chunked_prefill=chunked, policy=policy)
    return Scheduler(config, BlockManager(num_blocks, block_size), clock or FakeClock())


def step(sched: Scheduler) -> tuple[SchedulerOutput, list[Sequence]]:
    out = sched.schedule()
    sampled = {c.seq.request_id: TOKEN for c in out.scheduled if c.samples}
    return out, sched.update_from_output(out, sampled)


def chunks(out: SchedulerOutput) -> list[tuple[str, int]]:
    return [(c.seq.request_id, c.num_new_tokens) for c in out.scheduled]


def test_token_budget_is_shared_and_the_last_prompt_gets_a_partial_chunk() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    sched.add(make_seq("a", 5))
    sched.add(make_seq("b", 6))
    out, received = step(sched)
    assert chunks(out) == [("a", 5), ("b", 3)]
    assert [c.samples for c in out.scheduled] == [True, False]
    assert out.num_batched_tokens == 8
    assert [s.request_id for s in received] == ["a"]
    out, _ = step(sched)
    assert chunks(out) == [("a", 1), ("b", 3)]  # a decodes, b finishes its prompt
    assert out.num_batched_tokens == 4


def test_decode_steps_batch_one_token_per_request() -> None:
    sched = make_scheduler()
    for rid in "abc":
        sched.add(make_seq(rid, 3))
    step(sched)
    out, received = step(sched)
    assert chunks(out) == [("a", 1), ("b", 1), ("c", 1)]
    assert all(c.samples for c in out.scheduled)
    assert [s.output_token_ids for s in received] == [[TOKEN, TOKEN]] * 3


def test_chunked_prefill_splits_a_long_prompt_over_steps() -> None:
    sched = make_scheduler(max_num_batched_tokens=4)
    seq = make_seq("long", 10)
    sched.add(seq)
    seen = []
    for _ in range(4):
        out, _ = step(sched)
        (chunk,) = out.scheduled
        seen.append((chunk.start_position, chunk.num_new_tokens, chunk.samples))
    assert seen == [(0, 4, False), (4, 4, False), (8, 2, True), (10, 1, True)]
    assert seq.num_computed_tokens == 11 and seq.output_token_ids == [TOKEN, TOKEN]
    assert len(seq.block_table) == 3  # 11 positions in blocks of 4


def test_without_chunking_a_prompt_waits_for_a_step_with_room() -> None:
    sched = make_scheduler(max_num_batched_tokens=8, chunked=False)
    sched.add(make_seq("a", 6))
    sched.add(make_seq("b", 5))
    out, _ = step(sched)
    assert chunks(out) == [("a", 6)]
    assert sched.get("b").status is SequenceStatus.WAITING
    out, _ = step(sched)
    assert chunks(out) == [("a", 1), ("b", 5)]


def test_add_rejects_what_can_never_run() -> None:
    sched = make_scheduler(num_blocks=2, block_size=4, max_num_batched_tokens=8, chunked=False)
    with pytest.raises(ValueError, match="9 tokens exceeds max_num_batched_tokens=8"):
        sched.add(make_seq("too-long-for-a-step", 9))
    sched = make_scheduler(num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match="9 tokens needs 3 KV blocks of 4 tokens, but the cache has only 2"):
        sched.add(make_seq("too-long-for-the-cache", 9))
    sched.add(make_seq("a", 1))
    with pytest.raises(ValueError, match="already scheduled"):
        sched.add(make_seq("a", 1))


def test_max_num_seqs_caps_the_running_set() -> None:
    sched = make_scheduler(max_num_seqs=2)
    for rid in "abc":
        sched.add(make_seq(rid, 2))
    out, _ = step(sched)
    assert chunks(out) == [("a", 2), ("b", 2)]
    assert (sched.num_running, sched.num_waiting) == (2, 1)
    sched.finish(sched.get("a"), FinishReason.STOP)
    out, _ = step(sched)
    assert chunks(out) == [("b", 1), ("c", 2)]


def test_out_of_blocks_preempts_the_latest_arrival_by_recompute() -> None:
    clock = FakeClock(1.0)
    sched = make_scheduler(num_blocks=2, block_size=4, clock=clock)
    a, b = make_seq("a", 4, arrival=0.0), make_seq("b", 4, arrival=1.0)
    sched.add(a)
    sched.add(b)
    step(sched)  # both prompts fill one block each; each now has 5 tokens
    clock.now = 2.0
    out, _ = step(sched)  # a needs a second block: b gives its up
    assert chunks(out) == [("a", 1)]
    assert out.preempted == [b]
    assert (b.status, b.num_computed_tokens, b.block_table) == (SequenceStatus.WAITING, 0, [])
    assert b.output_token_ids == [TOKEN] and b.num_preemptions == 1
    assert b.first_scheduled_time == 1.0
    out, _ = step(sched)
    assert chunks(out) == [("a", 1)]  # b needs 2 blocks to recompute 5 tokens, none free
    sched.finish(a, FinishReason.STOP)
    out, received = step(sched)
    assert chunks(out) == [("b", 5)] and out.scheduled[0].samples  # prompt + kept output
    assert received == [b] and b.output_token_ids == [TOKEN, TOKEN]


def test_a_request_that_is_the_lowest_ranked_preempts_itself() -> None:
    sched = make_scheduler(num_blocks=3, block_size=4)
    a, b = make_seq("a", 6, arrival=0.0), make_seq("b", 4, arrival=1.0)
    sched.add(a)
    sched.add(b)
    step(sched)  # a: 2 blocks, b: 1 block, cache full
    out, _ = step(sched)  # a's position 6 fits its block; b's position 4 needs a new one
    assert chunks(out) == [("a", 1)]
    assert out.preempted == [b] and b.num_preemptions == 1
    assert sched.block_manager.num_free_blocks == 1


@pytest.mark.parametrize(("policy", "first"), [("priority", "vip"), ("fcfs", "batch")])
def test_priority_policy_admits_vip_before_an_earlier_batch_request(policy: str, first: str) -> None:
    sched = make_scheduler(max_num_seqs=1, policy=policy)
    sched.add(make_seq("batch", 3, arrival=0.0, priority=Priority.BATCH))
    sched.add(make_seq("vip", 3, arrival=1.0, priority=Priority.VIP))
    out, _ = step(sched)
    assert chunks(out) == [(first, 3)]


def test_priority_policy_preempts_running_batch_for_a_waiting_vip_when_seats_are_full() -> None:
    sched = make_scheduler(max_num_seqs=1, policy="priority")
    batch = make_seq("batch", 3, arrival=0.0, priority=Priority.BATCH)
    sched.add(batch)
    step(sched)
    sched.add(make_seq("vip", 3, arrival=1.0, priority=Priority.VIP))
    out, _ = step(sched)
    assert out.preempted == [batch] and chunks(out) == [("vip", 3)]
    assert (batch.status, batch.num_computed_tokens, batch.num_preemptions) == (SequenceStatus.WAITING, 0, 1)
    assert batch.output_token_ids == [TOKEN]


def test_priority_policy_preempts_for_blocks_too() -> None:
    sched = make_scheduler(num_blocks=3, block_size=4, policy="priority")
    sched.add(make_seq("batch", 8, priority=Priority.BATCH))
    step(sched)  # batch holds 2 of the 3 blocks
    sched.add(make_seq("vip", 5, arrival=1.0, priority=Priority.VIP))
    out, _ = step(sched)  # vip needs 2 blocks, 1 is free
    assert [s.request_id for s in out.preempted] == ["batch"] and chunks(out) == [("vip", 5)]


@pytest.mark.parametrize(("policy", "vip_priority"), [("fcfs", Priority.VIP), ("priority", Priority.BATCH)])
def test_no_preemption_under_fcfs_or_between_equal_tiers(policy: str, vip_priority: int) -> None:
    sched = make_scheduler(max_num_seqs=1, policy=policy)
    sched.add(make_seq("batch", 3, priority=Priority.BATCH))
    step(sched)
    sched.add(make_seq("late", 3, arrival=1.0, priority=vip_priority))
    out, _ = step(sched)
    assert out.preempted == [] and chunks(out) == [("batch", 1)]


def test_deadlines_expire_waiting_and_running_requests() -> None:
    clock = FakeClock(0.0)
    sched = make_scheduler(max_num_seqs=1, clock=clock)
    running = make_seq("running", 3, deadline=10.0)
    waiting = make_seq("waiting", 3, arrival=1.0, deadline=5.0)
    sched.add(running)
    sched.add(waiting)
    step(sched)
    clock.now = 5.0  # exactly at the deadline: not passed yet
    out, _ = step(sched)
    assert out.expired == []
    clock.now = 6.0
    out, _ = step(sched)
    assert out.expired == [waiting] and chunks(out) == [("running", 1)]
    clock.now = 11.0
    out, _ = step(sched)
    assert out.expired == [running] and out.scheduled == []
    for seq, t in ((waiting, 6.0), (running, 11.0)):
        assert (seq.status, seq.finish_reason, seq.finished_time) == (SequenceStatus.FINISHED, FinishReason.DEADLINE, t)
    assert running.block_table == [] and sched.block_manager.num_free_blocks == 64
    assert not sched.has_unfinished()


def test_abort_frees_blocks_and_a_pending_output_is_skipped() -> None:
    clock = FakeClock(3.0)
    sched = make_scheduler(clock=clock)
    sched.add(make_seq("a", 9))
    out = sched.schedule()
    assert sched.block_manager.num_free_blocks == 61
    seq = sched.abort("a")
    assert (seq.status, seq.finish_reason, seq.finished_time) == (SequenceStatus.FINISHED, FinishReason.ABORT, 3.0)
    assert sched.block_manager.num_free_blocks == 64 and sched.get("a") is None
    assert sched.update_from_output(out, {"a": TOKEN}) == []
    assert seq.output_token_ids == [] and seq.num_computed_tokens == 0
    assert sched.abort("a") is None and sched.abort("unknown") is None


def test_update_appends_tokens_only_for_sampling_chunks() -> None:
    clock = FakeClock(0.0)
    sched = make_scheduler(max_num_batched_tokens=4, clock=clock)
    seq = make_seq("a", 6)
    sched.add(seq)
    out = sched.schedule()
    assert sched.update_from_output(out, {"a": 1}) == []  # a token for a non-sampling chunk is ignored
    assert (seq.num_computed_tokens, seq.output_token_ids, seq.first_token_time) == (4, [], None)
    clock.now = 2.5
    out = sched.schedule()
    assert sched.update_from_output(out, {"a": 42}) == [seq]
    assert (seq.num_computed_tokens, seq.output_token_ids, seq.first_token_time) == (6, [42], 2.5)
    with pytest.raises(RuntimeError, match="stale"):
        sched.update_from_output(out, {"a": 42})


def test_a_context_that_outgrows_the_whole_cache_ends_with_length() -> None:
    sched = make_scheduler(num_blocks=1, block_size=4)
    seq = make_seq("a", 3)
    sched.add(seq)
    step(sched)  # 3 prompt tokens + 1 output: exactly 4 positions
    out, _ = step(sched)
    assert chunks(out) == [("a", 1)]  # computes position 3, the cache's last row
    out, _ = step(sched)
    assert out.kv_exhausted == [seq] and seq.finish_reason is FinishReason.LENGTH
    assert sched.block_manager.num_free_blocks == 1


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_random_workload_finishes_every_request_and_returns_every_block(policy: str, chunked: bool, seed: int) -> None:
    rng = random.Random(seed)
    block_size, num_blocks, budget, max_seqs = 4, 8, 12, 4
    capacity = block_size * num_blocks
    sched = make_scheduler(num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_seqs,
                           max_num_batched_tokens=budget, chunked=chunked, policy=policy)
    arrivals: dict[int, list[Sequence]] = {}
    target: dict[str, int] = {}
    for i in range(30):
        prompt = rng.randint(1, budget)
        # The last sampled token never needs KV, so a request alone always fits.
        target[f"r{i}"] = rng.randint(1, min(20, capacity - prompt + 1))
        seq = make_seq(f"r{i}", prompt, arrival=float(i), priority=rng.randint(0, 3))
        arrivals.setdefault(rng.randint(0, 40), []).append(seq)
    all_seqs = [s for group in arrivals.values() for s in group]

    for n in range(5000):
        for seq in arrivals.pop(n, []):
            sched.add(seq)
        if not arrivals and not sched.has_unfinished():
            break
        out = sched.schedule()
        assert out.num_batched_tokens == sum(c.num_new_tokens for c in out.scheduled) <= budget
        assert sched.num_running <= max_seqs and not out.kv_exhausted
        tables = [b for s in sched.running for b in s.block_table]
        assert len(tables) == len(set(tables)) == sched.block_manager.num_used_blocks
        for c in out.scheduled:
            assert len(c.seq.block_table) * block_size >= c.end_position
        sampled = {c.seq.request_id: rng.randint(0, 99) for c in out.scheduled if c.samples}
        for seq in sched.update_from_output(out, sampled):
            if seq.num_output_tokens == target[seq.request_id]:
                sched.finish(seq, FinishReason.STOP)
    else:
        pytest.fail("the workload did not drain")

    assert sched.block_manager.num_free_blocks == num_blocks
    assert all(s.finish_reason is FinishReason.STOP for s in all_seqs)
    assert all(s.num_output_tokens == target[s.request_id] for s in all_seqs)
    assert sum(s.num_preemptions for s in all_seqs) > 0  # the tiny cache did force recompute
