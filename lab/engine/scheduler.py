"""`Scheduler`: vLLM v1 token-budget continuous batching, torch-free.

The one rule (explained once): there are no prefill and decode phases. Each step, every
scheduled request's computed tokens catch up with its tokens by some new tokens; a chunk that
reaches the end of the request's known tokens makes the runner sample one more token. A
prompt, a chunk of a prompt, a decode token and a recompute after preemption are the same thing.

One `schedule()` call, phase by phase:
1. expire: waiting and running requests past their deadline finish with DEADLINE; requests
   whose tokens can no longer fit in the whole KV cache finish with LENGTH (`kv_exhausted`).
2. rank preemption (priority policy only): while the best waiting request strictly outranks
   the worst running one and cannot be admitted (no seat under `max_num_seqs`, or too few free
   blocks for its next chunk), the worst running request is preempted.
3. running: in rank order, each running request gets its next chunk from the token budget.
   When the free blocks run out, the lowest-ranked running request is preempted by recompute
   (possibly the request itself). Iterating best-first means a victim is never already in
   this step's output.
4. waiting: in rank order, admitted while budget, seats and blocks allow; the first that does
   not fit stops admission (no overtaking). Skipped when step 3 ran out of blocks.

Preemption by recompute frees the request's blocks and resets `num_computed_tokens` to 0; its
output tokens are kept, so it later re-prefills prompt + outputs.
"""
from __future__ import annotations

import bisect
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

from lab.engine.block_manager import BlockManager
from lab.engine.config import SchedulerConfig
from lab.engine.scheduler_output import ScheduledChunk, SchedulerOutput
from lab.engine.scheduling_policy import make_policy
from lab.engine.sequence import PENDING_TOKEN_ID, FinishReason, Sequence, SequenceStatus

__all__ = ["ScheduledChunk", "Scheduler", "SchedulerOutput"]  # the records are re-exported here


@dataclass
class _Step:
    """What one schedule() call has decided so far."""

    token_budget: int
    scheduled: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    expired: list[Sequence] = field(default_factory=list)
    kv_exhausted: list[Sequence] = field(default_factory=list)
    ran_out_of_blocks: bool = False

    def take(self, seq: Sequence, num_new_tokens: int) -> None:
        self.scheduled.append(ScheduledChunk(seq, num_new_tokens))
        self.token_budget -= num_new_tokens


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        block_manager: BlockManager,
        clock: Callable[[], float] = time.time,
        max_model_len: int | None = None,  # async scheduling: a pending token that ends the context ends the request
    ) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.block_manager = block_manager
        self._clock = clock
        self._policy = make_policy(config.policy)
        self._waiting: list[Sequence] = []  # best rank first
        self._running: list[Sequence] = []  # best rank first; the victim is the last
        self._requests: dict[str, Sequence] = {}  # every unfinished request
        self._arrival_index: dict[str, int] = {}  # final tie-breaker of the rank
        self._counter = itertools.count()

    # ---- requests in and out ----------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        if seq.request_id in self._requests:
            raise ValueError(f"request {seq.request_id!r} is already scheduled")
        if seq.status is not SequenceStatus.WAITING:
            raise ValueError(f"request {seq.request_id!r} must be WAITING to be added, is {seq.status.value}")
        if seq.num_tokens == 0:
            raise ValueError(f"request {seq.request_id!r} has an empty prompt")
        self._check_can_ever_run(seq)
        self._requests[seq.request_id] = seq
        self._arrival_index[seq.request_id] = next(self._counter)
        self._insert(self._waiting, seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Finish an unfinished request with ABORT; None when it is unknown or already done."""
        seq = self._requests.get(request_id)
        if seq is None:
            return None
        self.finish(seq, FinishReason.ABORT)
        return seq

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End `seq`: free its blocks, mark it FINISHED. A no-op if it already is."""
        self._finish(seq, reason, self._clock())

    def get(self, request_id: str) -> Sequence | None:
        return self._requests.get(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> tuple[Sequence, ...]:
        return tuple(self._running)

    @property
    def waiting(self) -> tuple[Sequence, ...]:
        return tuple(self._waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self.block_manager.usage

    # ---- one step -----------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        now = self._clock()
        step = _Step(token_budget=self.config.max_num_batched_tokens)
        self._drain_ending()
        self._expire(step, now)
        self._preempt_for_rank(step)
        self._schedule_running(step)
        if not step.ran_out_of_blocks:  # no room was found for running requests: admit nobody
            self._schedule_waiting(step, now)
        return SchedulerOutput(
            scheduled=step.scheduled,
            preempted=step.preempted,
            expired=step.expired,
            num_batched_tokens=self.config.max_num_batched_tokens - step.token_budget,
            kv_exhausted=step.kv_exhausted,
        )

    def update_from_output(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[Sequence]:
        """Apply a step's results; return the requests that received a token, in chunk order."""
        received: list[Sequence] = []
        for chunk in output.scheduled:
            seq = chunk.seq
            if seq.status is not SequenceStatus.RUNNING or self._requests.get(seq.request_id) is not seq:
                continue  # aborted (or expired) between schedule() and now
            if seq.num_computed_tokens != chunk.start_position:
                raise RuntimeError(
                    f"request {seq.request_id!r}: output of a stale step (computed "
                    f"{seq.num_computed_tokens}, chunk starts at {chunk.start_position})"
                )
            seq.num_computed_tokens += chunk.num_new_tokens
            if not chunk.samples:
                continue
            if seq.request_id not in sampled:
                raise KeyError(f"no sampled token for request {seq.request_id!r}, whose chunk samples")
            seq.output_token_ids.append(sampled[seq.request_id])
            if seq.first_token_time is None:
                seq.first_token_time = self._clock()
            received.append(seq)
        return received

    # ---- async scheduling: a step's bookkeeping in two halves ----------------------------------
    # commit() at launch, so the next step can be scheduled while this one runs; apply_sampled()
    # when its tokens reach the host. Together they do what update_from_output does.

    def commit(self, output: SchedulerOutput) -> None:
        """Count a launched step's tokens as computed; a sampling chunk appends a pending token."""
        for chunk in output.scheduled:
            seq = chunk.seq
            if seq.status is not SequenceStatus.RUNNING or self._requests.get(seq.request_id) is not seq:
                continue  # finished while the step was being launched (its results are discarded)
            if seq.num_computed_tokens != chunk.start_position:
                raise RuntimeError(
                    f"request {seq.request_id!r}: commit of a stale step (computed "
                    f"{seq.num_computed_tokens}, chunk starts at {chunk.start_position})"
                )
            seq.num_computed_tokens += chunk.num_new_tokens
            if chunk.samples:
                seq.output_token_ids.append(PENDING_TOKEN_ID)
                seq.num_pending_tokens += 1

    def apply_sampled(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[Sequence]:
        """Fill a committed step's pending tokens; return the requests that received one, in chunk order.

        A request preempted since the step was launched still receives its token (it is WAITING,
        and recomputes it with the rest); one finished since then gets nothing.
        """
        received: list[Sequence] = []
        for chunk in output.scheduled:
            seq = chunk.seq
            if not chunk.samples or seq.is_finished or self._requests.get(seq.request_id) is not seq:
                continue
            if seq.num_pending_tokens != 1 or seq.request_id not in sampled:
                raise RuntimeError(f"request {seq.request_id!r}: no pending token to fill from this step")
            seq.output_token_ids[-1] = sampled[seq.request_id]
            seq.num_pending_tokens = 0
            if seq.first_token_time is None:
                seq.first_token_time = self._clock()
            received.append(seq)
        return received

    def _drain_ending(self) -> None:
        """Async scheduling: a request whose pending token ends it by length needs no more compute.

        Its seat and blocks go to others now, as they would in the plain loop once the token had
        been seen (the step that used its blocks runs before any step that reuses them: one
        stream). It stays unfinished, out of both queues, until its token arrives.
        """
        for queue in (self._running, self._waiting):
            for seq in [s for s in queue if s.num_pending_tokens and self._ends_by_length(s)]:
                self._remove(queue, seq)
                self.block_manager.free(seq)

    def _ends_by_length(self, seq: Sequence) -> bool:
        """The pending token reaches max_tokens or the context: the request ends when it arrives."""
        if seq.num_output_tokens >= seq.sampling_params.max_tokens:
            return True
        return self.max_model_len is not None and seq.num_tokens >= self.max_model_len

    # ---- phases -------------------------------------------------------------------------------

    def _expire(self, step: _Step, now: float) -> None:
        for seq in [*self._waiting, *self._running]:
            if seq.deadline is not None and now > seq.deadline:
                self._finish(seq, FinishReason.DEADLINE, now)
                step.expired.append(seq)
            elif self.block_manager.blocks_for_positions(seq.num_tokens) > self.block_manager.num_total_blocks:
                # Its context has outgrown the whole cache: it could never be computed again.
                self._finish(seq, FinishReason.LENGTH, now)
                step.kv_exhausted.append(seq)

    def _preempt_for_rank(self, step: _Step) -> None:
        while self._waiting and self._running:
            best, worst = self._waiting[0], self._running[-1]
            if not self._policy.outranks(best, worst) or self._can_admit(best):
                return
            self._preempt(worst)
            step.preempted.append(worst)

    def _schedule_running(self, step: _Step) -> None:
        i = 0
        while i < len(self._running) and step.token_budget > 0:
            seq = self._running[i]
            num_new = self._chunk_size(seq, step.token_budget)
            if num_new == 0:
                i += 1
                continue
            if not self._make_room(seq, num_new, step):
                break  # seq preempted itself, and it was the last running request
            self.block_manager.allocate(seq, num_new)
            step.take(seq, num_new)
            i += 1

    def _schedule_waiting(self, step: _Step, now: float) -> None:
        preempted_ids = {seq.request_id for seq in step.preempted}
        while self._waiting and step.token_budget > 0 and len(self._running) < self.config.max_num_seqs:
            seq = self._waiting[0]
            if seq.request_id in preempted_ids:
                break  # just made room by preempting it; do not take it straight back
            num_new = self._chunk_size(seq, step.token_budget)
            if num_new == 0 or not self.block_manager.can_allocate(seq, num_new):
                break
            self._waiting.pop(0)
            self.block_manager.allocate(seq, num_new)
            seq.status = SequenceStatus.RUNNING
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
            self._insert(self._running, seq)
            step.take(seq, num_new)

    # ---- helpers ------------------------------------------------------------------------------

    def _chunk_size(self, seq: Sequence, token_budget: int) -> int:
        """New tokens seq may compute with `token_budget` left; 0 when it must wait."""
        remaining = seq.num_uncomputed_tokens
        if remaining <= token_budget:
            return remaining
        # Without chunked prefill a request waits for a step with room for all its tokens,
        # except a recompute that has outgrown one step's budget: it would wait forever.
        if self.config.enable_chunked_prefill or seq.num_tokens > self.config.max_num_batched_tokens:
            return token_budget
        return 0

    def _can_admit(self, seq: Sequence) -> bool:
        if len(self._running) >= self.config.max_num_seqs:
            return False
        # Its next chunk as if it had the whole step budget (running requests come first,
        # so this is an upper bound on what it will ask for).
        num_new = self._chunk_size(seq, self.config.max_num_batched_tokens)
        return self.block_manager.can_allocate(seq, num_new)

    def _make_room(self, seq: Sequence, num_new: int, step: _Step) -> bool:
        """Preempt from the worst up until seq's chunk fits; False if seq itself was preempted."""
        while not self.block_manager.can_allocate(seq, num_new):
            victim = self._running[-1]
            self._preempt(victim)
            step.preempted.append(victim)
            step.ran_out_of_blocks = True
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self._remove(self._running, seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self._insert(self._waiting, seq)

    def _finish(self, seq: Sequence, reason: FinishReason, now: float) -> None:
        if seq.is_finished:
            return
        if self._requests.get(seq.request_id) is not seq:
            raise ValueError(f"request {seq.request_id!r} is not managed by this scheduler")
        if not self._remove(self._running, seq):
            self._remove(self._waiting, seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.finished_time = now
        del self._requests[seq.request_id]
        del self._arrival_index[seq.request_id]

    def _check_can_ever_run(self, seq: Sequence) -> None:
        budget = self.config.max_num_batched_tokens
        if not self.config.enable_chunked_prefill and seq.num_tokens > budget:
            raise ValueError(
                f"request {seq.request_id!r}: prompt of {seq.num_tokens} tokens exceeds "
                f"max_num_batched_tokens={budget} with chunked prefill off; enable chunked "
                f"prefill or raise max_num_batched_tokens"
            )
        bm = self.block_manager
        needed = bm.blocks_for_positions(seq.num_tokens)
        if needed > bm.num_total_blocks:
            raise ValueError(
                f"request {seq.request_id!r}: prompt of {seq.num_tokens} tokens needs {needed} KV "
                f"blocks of {bm.block_size} tokens, but the cache has only {bm.num_total_blocks} blocks"
            )

    def _rank(self, seq: Sequence) -> tuple[float, ...]:
        return (*self._policy.sort_key(seq), self._arrival_index[seq.request_id])

    def _insert(self, queue: list[Sequence], seq: Sequence) -> None:
        bisect.insort(queue, seq, key=self._rank)

    @staticmethod
    def _remove(queue: list[Sequence], seq: Sequence) -> bool:
        for i, queued in enumerate(queue):
            if queued is seq:
                del queue[i]
                return True
        return False
