"""One priority queue across tiers, with per-tier concurrency limits and deadlines.

Contract: a request takes a slot before it is forwarded and gives it back when its response ends.
A slot needs room in its tier (`TierConfig.max_concurrency`) and in the gateway as a whole (fewer
than `QueueConfig.max_inflight` held). Trunk reservation: a request runs *within its share* when it
starts while the within-share requests of all tiers together hold fewer than
`floor(max_inflight_share * max_inflight)` slots, so a lower tier (smaller share) leaves the last slots
to higher ones. A tier that may not `borrow` starts only within its share (the strict reservation,
the plain path); one that borrows may also start on an idle slot above it: that request is *borrowed*
until it ends. When a slot frees, the waiting request with the lowest priority value (VIP 0 first)
whose tier has room gets it; within a tier, first come first served. A request still waiting when
its tier's `timeout_ms` has passed leaves the queue with `QueueTimeout` (tier and waited ms), which
the app turns into an explicit JSON error: nobody waits forever in silence.

Taking slots back, each time from the newest running request (least work lost), whose ticket becomes
`preempted` at once (its slot counts as free) and whose `on_preempt` callback tells its owner to stop,
with an explicit error to its client:
- reclaim (`reclaim_for`): a waiter that would run within its share, having waited its tier's
  `reclaim_after_ms` (0: at once), takes the slot of a borrowed request of a lower tier, lowest tier
  first. A lent slot is given back on demand; borrowing never preempts anything.
- preempt (`preempt_for`), the last resort: a waiter of a tier with `preempt_after_ms` that has waited
  that long takes a borrowed slot if one helps, else the slot of the first tier in its `preempts` list
  with a running request whose slot lets it in, even one within its share.

`PriorityAdmission` is the policy and state, synchronous and clock-driven (unit-tested with a fake
clock: `expire(now)` removes overdue waiters). `AdmissionQueue` is its asyncio face: `acquire`
waits on a future with the tier's deadline as timeout (reclaiming and preempting on the way when its
tier may); `release` hands the slot on.
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
    borrowed: bool = False  # started above its tier's share on an idle slot: reclaimable by higher tiers
    on_admit: Callable[[Ticket], None] | None = field(default=None, repr=False)
    on_preempt: Callable[[Ticket], None] | None = field(default=None, repr=False)


class PriorityAdmission:
    def __init__(self, tiers: tuple[TierConfig, ...], max_inflight: int, clock: Callable[[], float]) -> None:
        self._tiers = {t.name: t for t in tiers}
        self._max_inflight = max_inflight
        # Within-share slots all tiers together may hold when a request of this tier starts within its share.
        self._occupancy_limit = {t.name: max(1, math.floor(t.max_inflight_share * max_inflight + 1e-9)) for t in tiers}
        self._lowest_first = sorted(self._tiers, key=lambda name: -self._tiers[name].priority)
        self._clock = clock
        self._waiting: dict[str, deque[Ticket]] = {t.name: deque() for t in tiers}
        self._running: dict[str, dict[Ticket, None]] = {t.name: {} for t in tiers}  # admission order
        self._within = 0  # running requests that started within their tier's share
        self._seq = itertools.count()
        self.preemptions = 0  # every slot taken back, reclaims included
        self.reclaims = 0

    def waiting(self, tier: str) -> int:
        return len(self._waiting[tier])

    def inflight(self, tier: str | None = None) -> int:
        return len(self._running[tier]) if tier else sum(map(len, self._running.values()))

    def borrowed(self, tier: str | None = None) -> int:
        """Running requests that started above their tier's share."""
        return sum(t.borrowed for name in ([tier] if tier else self._running) for t in self._running[name])

    def occupancy_limit(self, tier: str) -> int:
        return self._occupancy_limit[tier]

    def _within_share(self, tier: str, freed_within: int = 0) -> bool:
        return self._within - freed_within < self._occupancy_limit[tier]

    def _has_room(self, tier: str) -> bool:
        return (len(self._running[tier]) < self._tiers[tier].max_concurrency and self.inflight() < self._max_inflight
                and (self._tiers[tier].borrow or self._within_share(tier)))

    def _has_room_without(self, tier: str, victim: Ticket) -> bool:
        """Whether a request of `tier` could start once `victim`'s slot is free."""
        return (len(self._running[tier]) < self._tiers[tier].max_concurrency
                and self.inflight() - 1 < self._max_inflight
                and (self._tiers[tier].borrow or self._within_share(tier, freed_within=int(not victim.borrowed))))

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
        ticket.borrowed = not self._within_share(ticket.tier)
        self._within += not ticket.borrowed
        self._running[ticket.tier][ticket] = None
        # Called once, then dropped: the callback holds the waiter's future, whose result is this ticket,
        # a reference cycle that only the cyclic GC would free (a pause on the request path).
        on_admit, ticket.on_admit = ticket.on_admit, None
        if on_admit is not None:
            on_admit(ticket)

    def _remove(self, ticket: Ticket, state: str) -> None:
        ticket.state, ticket.on_preempt = state, None
        del self._running[ticket.tier][ticket]
        self._within -= not ticket.borrowed

    def release(self, ticket: Ticket) -> None:
        if ticket.state != "admitted":
            return  # releasing twice (stream end and cleanup both call) is harmless
        self._remove(ticket, "released")
        self._dispatch()

    def _dispatch(self) -> None:
        while self.inflight() < self._max_inflight:
            heads = [q[0] for name, q in self._waiting.items() if q and self._has_room(name)]
            if not heads:
                return
            best = min(heads, key=lambda t: (t.priority, t.seq))
            self._waiting[best.tier].popleft()
            self._admit(best)

    def borrower_for(self, ticket: Ticket) -> Ticket | None:
        """The borrowed request `ticket` may reclaim: the newest of the lowest tier below `ticket`'s that has one."""
        for name in self._lowest_first:
            if self._tiers[name].priority <= ticket.priority:
                return None
            for running in reversed(self._running[name]):
                if running.borrowed:
                    return running
        return None

    def victim_for(self, ticket: Ticket) -> Ticket | None:
        """The running request `ticket` may preempt: the newest of the first tier in its `preempts` whose
        slot would let `ticket` in (a borrowed slot does not help a waiter held back by its own share)."""
        for name in self._tiers[ticket.tier].preempts:
            for running in reversed(self._running[name]):
                if self._has_room_without(ticket.tier, running):
                    return running
        return None

    def _take_slot(self, victim: Ticket) -> None:
        on_preempt = victim.on_preempt
        self._remove(victim, "preempted")
        self.preemptions += 1
        if on_preempt is not None:
            on_preempt(victim)
        self._dispatch()  # the best waiter gets the freed slot, most often the one it was freed for

    def reclaim_for(self, ticket: Ticket) -> Ticket | None:
        """Free a slot for a waiting `ticket` that would run within its share by preempting a borrowed
        request of a lower tier (the newest of the lowest tier with one); returns it, or None."""
        if ticket.state != "waiting" or not self._within_share(ticket.tier):
            return None
        victim = self.borrower_for(ticket)
        if victim is None or not self._has_room_without(ticket.tier, victim):
            return None
        self.reclaims += 1
        self._take_slot(victim)
        return victim

    def preempt_for(self, ticket: Ticket) -> Ticket | None:
        """Free a slot for a waiting `ticket`, the last resort: a borrowed request of a lower tier, else one
        of the tiers in its `preempts` (even within its share); returns it, or None.

        Only when one freed slot lets the waiter's tier in: neither its own cap nor an occupancy limit
        that one slot cannot bring it under holds it back.
        """
        if ticket.state != "waiting":
            return None
        borrower = self.borrower_for(ticket)
        for victim in (borrower, self.victim_for(ticket)):
            if victim is not None and self._has_room_without(ticket.tier, victim):
                self.reclaims += victim is borrower
                self._take_slot(victim)
                return victim
        return None

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
        config = self._tiers[tier]
        reclaim_ms, preempt_ms = config.reclaim_after_ms, config.preempt_after_ms
        reclaim_at = ticket.enqueued_at + reclaim_ms / 1000.0 if reclaim_ms is not None else math.inf
        preempt_at = ticket.enqueued_at + preempt_ms / 1000.0 if preempt_ms is not None else math.inf
        try:
            # The event loop may fire a timer up to its clock resolution early: wait until the
            # deadline has really passed, so no request is timed out before its tier's timeout.
            while not future.done() and (remaining := ticket.deadline - self._clock()) > 0:
                now = self._clock()
                if now >= reclaim_at:
                    # A freed slot may go to an earlier higher waiter: reclaim again while borrowers help.
                    # Once none does, the next slot to free goes to a waiter of this tier or a higher one
                    # (a borrower starts only where no higher waiter fits), so there is nothing to retry.
                    while ticket.state == "waiting" and self.core.reclaim_for(ticket) is not None:
                        pass
                    reclaim_at = math.inf
                    continue
                if now >= preempt_at:
                    # The freed slot may go to an earlier higher waiter: try again one period later.
                    self.core.preempt_for(ticket)
                    preempt_at = self._clock() + preempt_ms / 1000.0
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(future),
                                           timeout=min(remaining, reclaim_at - now, preempt_at - now))
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
