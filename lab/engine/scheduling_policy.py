"""Scheduling policies: the order in which requests are served, behind one small protocol.

A policy answers two questions for the scheduler:
- `sort_key(seq)`: the rank of a request; a lower key is served first, admitted first, and
  preempted last. The scheduler appends its own arrival counter as the final tie-breaker, so
  two requests never compare equal.
- `outranks(a, b)`: may waiting request `a` take the place of running request `b`? Only the
  priority policy ever says yes; FCFS (the plain path) never preempts for rank, only when the
  KV cache runs out of blocks.

Adding a policy (say, shortest-job-first) is a new class here, not a flag in the scheduler.
"""
from __future__ import annotations

from typing import Protocol

from lab.engine.sequence import Sequence


class SchedulingPolicy(Protocol):
    name: str

    def sort_key(self, seq: Sequence) -> tuple[float, ...]:
        """Rank of `seq`; lower is served first."""
        ...

    def outranks(self, waiting: Sequence, running: Sequence) -> bool:
        """True when `waiting` may preempt `running` to be admitted."""
        ...


class FCFSPolicy:
    """First come, first served: arrival order, no preemption for rank."""

    name = "fcfs"

    def sort_key(self, seq: Sequence) -> tuple[float, ...]:
        return (seq.arrival_time,)

    def outranks(self, waiting: Sequence, running: Sequence) -> bool:
        return False


class PriorityPolicy:
    """Lower `priority` value first (vLLM's convention), then arrival order.

    A waiting request preempts a running one only when its priority value is strictly lower;
    equal tiers never preempt each other, so a tier cannot thrash itself.
    """

    name = "priority"

    def sort_key(self, seq: Sequence) -> tuple[float, ...]:
        return (seq.priority, seq.arrival_time)

    def outranks(self, waiting: Sequence, running: Sequence) -> bool:
        return waiting.priority < running.priority


_POLICIES: dict[str, type[FCFSPolicy] | type[PriorityPolicy]] = {
    FCFSPolicy.name: FCFSPolicy,
    PriorityPolicy.name: PriorityPolicy,
}


def make_policy(name: str) -> SchedulingPolicy:
    """The policy named by `SchedulerConfig.policy`."""
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown scheduling policy {name!r}; known: {sorted(_POLICIES)}") from None
