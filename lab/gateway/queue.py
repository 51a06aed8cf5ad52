"""One priority queue across tiers, with per-tier concurrency limits and deadlines.

Contract: a request takes a slot before it is forwarded and gives it back when its response ends.
A slot needs room in its tier (`TierConfig.max_concurrency`) and in the gateway as a whole
(`QueueConfig.max_inflight`). When a slot frees, the waiting request with the lowest priority value
(VIP 0 first) whose tier has room gets it; within a tier, first come first served. A request still
waiting when its tier's `timeout_ms` has passed leaves the queue with `QueueTimeout` (tier and
waited ms), which the app turns into an explicit JSON error: nobody waits forever in silence.

`PriorityAdmission` is the policy and state, synchronous and clock-driven (unit-tested with a fake
clock: `expire(now)` removes overdue waiters). `AdmissionQueue` is its asyncio face: `acquire`
waits on a future with the tier's deadline as timeout; `release` hands the slot on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.gateway.config import TierConfig


class QueueTimeout(Exception):
    def __init__(self, tier: str, waited_ms: float, timeout_ms: int) -> None:
        super().__init__(f"request waited {waited_ms:.0f} ms in the queue of tier {tier!r}, "
                         f"past the tier's {timeout_ms} ms timeout; no replica capacity was free")
        self.tier, self.waited_ms, self.timeout_ms = tier, waited_ms, timeout_ms


@dataclass(eq=False)
class Ticket:
    tier: str
    priority: int
    seq: int
    enqueued_at: float
    deadline: float
    state: str = "waiting"  # waiting -> admitted -> released, or waiting -> expired / cancelled
    admitted_at: float | None = None
    on_admit: Callable[[Ticket], None] | None = field(default=None, repr=False)


class PriorityAdmission:
    def __init__(self, tiers: tuple[TierConfig, ...], max_inflight: int, clock: Callable[[], float]) -> None:
        self._tiers = {t.name: t for t in tiers}
        self._max_inflight = max_inflight
        self._clock = clock
        self._waiting: dict[str, deque[Ticket]] = {t.name: deque() for t in tiers}
        self._inflight: dict[str, int] = {t.name: 0 for t in tiers}
        self._seq = itertools.count()

    def waiting(self, tier: str) -> int:
        return len(self._waiting[tier])

    def inflight(self, tier: str | None = None) -> int:
        return self._inflight[tier] if tier else sum(self._inflight.values())

    def _has_room(self, tier: str) -> bool:
        return self._inflight[tier] < self._tiers[tier].max_concurrency and self.inflight() < self._max_inflight

    def submit(self, tier: str, on_admit: Callable[[Ticket], None] | None = None) -> Ticket:
        config = self._tiers[tier]
        now = self._clock()
        ticket = Ticket(tier, config.priority, next(self._seq), now, now + config.timeout_ms / 1000.0, on_admit=on_admit)
        # A newcomer may go straight in only if no one of its tier is ahead of it; waiters of other
        # tiers are blocked by their own tier's limit, or they would have been admitted already.
        if not self._waiting[tier] and self._has_room(tier):
            self._admit(ticket)
        else:
            self._waiting[tier].append(ticket)
        return ticket

    def _admit(self, ticket: Ticket) -> None:
        ticket.state, ticket.admitted_at = "admitted", self._clock()
        self._inflight[ticket.tier] += 1
        if ticket.on_admit is not None:
            ticket.on_admit(ticket)

    def release(self, ticket: Ticket) -> None:
        if ticket.state != "admitted":
            return  # releasing twice (stream end and cleanup both call) is harmless
        ticket.state = "released"
        self._inflight[ticket.tier] -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self.inflight() < self._max_inflight:
            heads = [q[0] for name, q in self._waiting.items() if q and self._has_room(name)]
            if not heads:
                return
            best = min(heads, key=lambda t: (t.priority, t.seq))
            self._waiting[best.tier].popleft()
            self._admit(best)

    def cancel(self, ticket: Ticket, state: str = "cancelled") -> bool:
        """Take a waiting ticket out of the queue; False when it was already admitted."""
        if ticket.state != "waiting":
            return False
        self._waiting[ticket.tier].remove(ticket)
        ticket.state = state
        return True

    def expire(self, now: float) -> list[Ticket]:
        """Remove and return every waiter whose deadline has passed (FIFO per tier: heads go first)."""
        expired = []
        for queue in self._waiting.values():
            while queue and queue[0].deadline <= now:
                ticket = queue.popleft()
                ticket.state = "expired"
                expired.append(ticket)
        return expired


class AdmissionQueue:
    """asyncio wrapper: `await acquire(tier)` -> admitted Ticket, or raises QueueTimeout."""

    def __init__(self, tiers: tuple[TierConfig, ...], max_inflight: int, clock: Callable[[], float]) -> None:
        self.core = PriorityAdmission(tiers, max_inflight, clock)
        self._clock = clock
        self._tiers = {t.name: t for t in tiers}

    async def acquire(self, tier: str) -> Ticket:
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()

        def wake(ticket: Ticket) -> None:
            if not future.done():
                future.set_result(ticket)

        ticket = self.core.submit(tier, on_admit=wake)
        if ticket.state == "admitted":
            return ticket
        try:
            # The event loop may fire a timer up to its clock resolution early: wait until the
            # deadline has really passed, so no request is timed out before its tier's timeout.
            while not future.done() and (remaining := ticket.deadline - self._clock()) > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            if not future.done():
                raise asyncio.TimeoutError
        except asyncio.TimeoutError:
            if self.core.cancel(ticket, state="expired"):
                waited_ms = (self._clock() - ticket.enqueued_at) * 1000.0
                raise QueueTimeout(tier, waited_ms, self._tiers[tier].timeout_ms) from None
        except asyncio.CancelledError:
            # The client went away while waiting: leave the queue, or hand back a slot just granted.
            if not self.core.cancel(ticket):
                self.core.release(ticket)
            raise
        return ticket

    def release(self, ticket: Ticket) -> None:
        self.core.release(ticket)
