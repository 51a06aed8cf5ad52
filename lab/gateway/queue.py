"""One priority queue across tiers, with per-tier concurrency limits and deadlines.

Contract: a request takes a slot before it is forwarded and gives it back when its response ends.
A slot needs room in its tier (`TierConfig.max_concurrency`) and in the gateway as a whole: fewer
than `floor(max_inflight_share * QueueConfig.max_inflight)` slots held by all tiers together, so a
lower tier (smaller share) leaves the last slots free for higher ones (trunk reservation). When a
slot frees, the waiting request with the lowest priority value (VIP 0 first) whose tier has room gets
it; within a tier, first come first served. A request still waiting when its tier's `timeout_ms` has
passed leaves the queue with `QueueTimeout` (tier and waited ms), which the app turns into an
explicit JSON error: nobody waits forever in silence.

Preemption: a waiter of a tier with `preempt_after_ms` that has waited that long calls
`preempt_for(ticket)`, which takes the slot of the newest running request (least work lost) of the
first tier in its tier's `preempts` list that has one running: that ticket becomes `preempted` at
once (its slot counts as free) and its `on_preempt` callback tells its owner to stop, with an
explicit error to its client.

`PriorityAdmission` is the policy and state, synchronous and clock-driven (unit-tested with a fake
clock: `expire(now)` removes overdue waiters). `AdmissionQueue` is its asyncio face: `acquire`
waits on a future with the tier's deadline as timeout (preempting on the way when its tier may);
`release` hands the slot on.
"""

from __future__ import annotations

import asyncio
import itertools
import math
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
    state: str = "waiting"  # waiting -> admitted -> released | preempted, or waiting -> expired / cancelled
    admitted_at: float | None = None
    on_admit: Callable[[Ticket], None] | None = field(default=None, repr=False)
    on_preempt: Callable[[Ticket], None] | None = field(default=None, repr=False)


class PriorityAdmission:
    def __init__(self, tiers: tuple[TierConfig, ...], max_inflight: int, clock: Callable[[], float]) -> None:
        self._tiers = {t.name: t for t in tiers}
        self._max_inflight = max_inflight
        # Slots all tiers together may hold when a request of this tier starts (trunk reservation).
        self._occupancy_limit = {t.name: max(1, math.floor(t.max_inflight_share * max_inflight + 1e-9)) for t in tiers}
        self._clock = clock
        self._waiting: dict[str, deque[Ticket]] = {t.name: deque() for t in tiers}
        self._running: dict[str, dict[Ticket, None]] = {t.name: {} for t in tiers}  # admission order
        self._seq = itertools.count()
        self.preemptions = 0

    def waiting(self, tier: str) -> int:
        return len(self._waiting[tier])

    def inflight(self, tier: str | None = None) -> int:
        return len(self._running[tier]) if tier else sum(map(len, self._running.values()))

    def occupancy_limit(self, tier: str) -> int:
        return self._occupancy_limit[tier]

    def _has_room(self, tier: str) -> bool:
        return (len(self._running[tier]) < self._tiers[tier].max_concurrency
                and self.inflight() < min(self._max_inflight, self._occupancy_limit[tier]))

    def submit(self, tier: str, on_admit: Callable[[Ticket], None] | None = None,
               on_preempt: Callable[[Ticket], None] | None = None) -> Ticket:
        config = self._tiers[tier]
        now = self._clock()
        ticket = Ticket(tier, config.priority, next(self._seq), now, now + config.timeout_ms / 1000.0,
                        on_admit=on_admit, on_preempt=on_preempt)
        # A newcomer may go straight in only if no one of its tier is ahead of it; waiters of other
        # tiers are blocked by their own tier's limit, or they would have been admitted already.
        if not self._waiting[tier] and self._has_room(tier):
            self._admit(ticket)
        else:
            self._waiting[tier].append(ticket)
        return ticket

    def _admit(self, ticket: Ticket) -> None:
        ticket.state, ticket.admitted_at = "admitted", self._clock()
        self._running[ticket.tier][ticket] = None
        # Called once, then dropped: the callback holds the waiter's future, whose result is this ticket,
        # a reference cycle that only the cyclic GC would free (a pause on the request path).
        on_admit, ticket.on_admit = ticket.on_admit, None
        if on_admit is not None:
            on_admit(ticket)

    def release(self, ticket: Ticket) -> None:
        if ticket.state != "admitted":
            return  # releasing twice (stream end and cleanup both call) is harmless
        ticket.state, ticket.on_preempt = "released", None
        del self._running[ticket.tier][ticket]
        self._dispatch()

    def _dispatch(self) -> None:
        while self.inflight() < self._max_inflight:
            heads = [q[0] for name, q in self._waiting.items() if q and self._has_room(name)]
            if not heads:
                return
            best = min(heads, key=lambda t: (t.priority, t.seq))
            self._waiting[best.tier].popleft()
            self._admit(best)

    def victim_for(self, ticket: Ticket) -> Ticket | None:
        """The running request `ticket` may preempt: the newest of the first tier in its `preempts` with one."""
        for name in self._tiers[ticket.tier].preempts:
            running = self._running[name]
            if running:
                return next(reversed(running))
        return None

    def preempt_for(self, ticket: Ticket) -> Ticket | None:
        """Free a slot for a waiting `ticket` by preempting a lower tier's running request; returns it.

        Only when one freed slot lets the waiter's tier in: neither its own cap nor an occupancy limit
        that one slot cannot bring it under holds it back. The freed slot goes through the usual
        dispatch (the best waiter gets it, most often `ticket`).
        """
        tier = ticket.tier
        if (ticket.state != "waiting" or len(self._running[tier]) >= self._tiers[tier].max_concurrency
                or self.inflight() - 1 >= min(self._max_inflight, self._occupancy_limit[tier])):
            return None
        victim = self.victim_for(ticket)
        if victim is None:
            return None
        on_preempt, victim.state, victim.on_preempt = victim.on_preempt, "preempted", None
        del self._running[victim.tier][victim]
        self.preemptions += 1
        if on_preempt is not None:
            on_preempt(victim)
        self._dispatch()
        return victim

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

    async def acquire(self, tier: str, on_preempt: Callable[[Ticket], None] | None = None) -> Ticket:
        """An admitted ticket; `on_preempt` is called (synchronously) if a higher tier preempts it later."""
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()

        def wake(ticket: Ticket) -> None:
            if not future.done():
                future.set_result(ticket)

        ticket = self.core.submit(tier, on_admit=wake, on_preempt=on_preempt)
        if ticket.state == "admitted":
            return ticket
        preempt_ms = self._tiers[tier].preempt_after_ms
        preempt_at = ticket.enqueued_at + preempt_ms / 1000.0 if preempt_ms is not None else math.inf
        try:
            # The event loop may fire a timer up to its clock resolution early: wait until the
            # deadline has really passed, so no request is timed out before its tier's timeout.
            while not future.done() and (remaining := ticket.deadline - self._clock()) > 0:
                until_preempt = preempt_at - self._clock()
                if until_preempt <= 0:
                    # The freed slot may go to an earlier higher waiter: try again one period later.
                    self.core.preempt_for(ticket)
                    preempt_at = self._clock() + preempt_ms / 1000.0
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout=min(remaining, until_preempt))
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
