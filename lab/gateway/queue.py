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

Guaranteed minimums (`TierConfig.min_inflight`): while a tier has waiters and runs fewer than its
minimum, `shortfall(tier)` free slots are held for it against every tier but the top one, so a freed
slot goes to it before an earlier waiter of a higher tier (two minimums: the higher tier's first). A
request it starts above its share for the minimum is borrowed and `guaranteed`: only the top tier
reclaims it. A minimum holds free slots, never running requests.

Taking slots back, each time from the newest running request (least work lost), whose ticket becomes
`preempted` at once and whose `on_preempt` callback tells its owner to stop, with an explicit error to
its client; the slot changes hands (to the head of the taker's tier, unless a higher waiter can use
it), even where the victim's tier falls below its minimum:
- reclaim (`reclaim_for`): a waiter that would run within its share, having waited its tier's
  `reclaim_after_ms` (0: at once), takes the slot of a borrowed request of a lower tier, lowest tier
  first. A lent slot is given back on demand; borrowing never preempts anything.
- preempt (`preempt_for`), the last resort: a waiter of a tier with `preempt_after_ms` that has waited
  that long takes a borrowed slot if one helps, else the slot of the first tier in its `preempts` list
  with a running request whose slot lets it in, even one within its share; a tier whose entry in
  `preempt_delays_ms` is longer is due only once the waiter has waited that long (`next_preempt_at`).

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


_CLOCK_SLACK_S = 1e-6  # a timer set for a delay may read the clock a float rounding short of it: still due


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
    guaranteed: bool = False  # borrowed while its tier ran below `min_inflight`: only the top tier reclaims it
    on_admit: Callable[[Ticket], None] | None = field(default=None, repr=False)
    on_preempt: Callable[[Ticket], None] | None = field(default=None, repr=False)


class PriorityAdmission:
    def __init__(self, tiers: tuple[TierConfig, ...], max_inflight: int, clock: Callable[[], float]) -> None:
        self._tiers = {t.name: t for t in tiers}
        self._max_inflight = max_inflight
        # Within-share slots all tiers together may hold when a request of this tier starts within its share.
        self._occupancy_limit = {t.name: max(1, math.floor(t.max_inflight_share * max_inflight + 1e-9)) for t in tiers}
        self._lowest_first = sorted(self._tiers, key=lambda name: -self._tiers[name].priority)
        # Tiers with a guaranteed minimum, highest first (the order in which a conflict of minimums is settled).
        self._with_minimum = sorted((t.name for t in tiers if t.min_inflight > 0),
                                    key=lambda name: self._tiers[name].priority)
        self._top_priority = min(t.priority for t in tiers)
        # Per tier, each tier of its `preempts` (in order) with the wait in seconds before it may be taken;
        # 0 where it is `preempt_after_ms`, the caller's timer (see `AdmissionQueue.acquire`).
        self._preempt_delays_s = {t.name: {name: _later_s(ms, t.preempt_after_ms) for name, ms in zip(
            t.preempts, t.preempt_delays_ms or [0] * len(t.preempts))} for t in tiers}
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

    def shortfall(self, tier: str) -> int:
        """Free slots held for `tier`'s minimum: what it runs below `min_inflight`, at most its waiters."""
        return max(0, min(self._tiers[tier].min_inflight - len(self._running[tier]), len(self._waiting[tier])))

    def _held_against(self, tier: str) -> int:
        """Free slots that other tiers' minimums keep from a request of `tier`.

        The top tier is never held back: the minimums exist so that its last resort finds a request of a
        lower tier to cancel, and a slot held against it would only make it wait, then cancel the request
        that started there. A tier below its own minimum yields only to higher tiers below theirs, so two
        minimums never hold the same free slot against each other.
        """
        if self._tiers[tier].priority == self._top_priority:
            return 0
        below_own = len(self._running[tier]) < self._tiers[tier].min_inflight
        return sum(self.shortfall(name) for name in self._with_minimum
                   if name != tier and not (below_own and self._tiers[name].priority >= self._tiers[tier].priority))

    def _has_room(self, tier: str, victim: Ticket | None = None) -> bool:
        """Whether a request of `tier` could start now, or in `victim`'s slot once it is taken.

        A minimum holds free slots, not running requests: a slot taken back changes hands even where
        the victim's tier falls below its minimum (see `_take_slot`), so the hold is counted as it is now.
        """
        config = self._tiers[tier]
        running = len(self._running[tier])
        free = self._max_inflight - self.inflight() + (victim is not None)
        freed_within = int(victim is not None and not victim.borrowed)
        return (running < config.max_concurrency and free > self._held_against(tier)
                and (config.borrow or running < config.min_inflight or self._within_share(tier, freed_within)))

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
        # Above its share (a borrower's, or one lifting its tier towards its minimum), a request is borrowed:
        # a higher tier that would run within its share may reclaim it; a guaranteed one, the top tier only.
        ticket.borrowed = not self._within_share(ticket.tier)
        below_minimum = len(self._running[ticket.tier]) < self._tiers[ticket.tier].min_inflight
        ticket.guaranteed = ticket.borrowed and below_minimum
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
                if running.borrowed and (not running.guaranteed or ticket.priority == self._top_priority):
                    return running
        return None

    def victim_for(self, ticket: Ticket) -> Ticket | None:
        """The running request `ticket` may preempt: the newest of the first tier in its `preempts`, among
        those it has waited long enough for, whose slot would let `ticket` in (a borrowed slot does not help
        a waiter held back by its own share)."""
        waited = self._clock() - ticket.enqueued_at
        for name, delay_s in self._preempt_delays_s[ticket.tier].items():
            if waited < delay_s - _CLOCK_SLACK_S:
                continue
            for running in reversed(self._running[name]):
                if self._has_room(ticket.tier, running):
                    return running
        return None

    def next_preempt_at(self, ticket: Ticket) -> float:
        """When the next tier of `ticket`'s `preempts` becomes due (its delay has passed); inf: none is left."""
        now = self._clock()
        due = [ticket.enqueued_at + d for d in self._preempt_delays_s[ticket.tier].values()
               if ticket.enqueued_at + d > now + _CLOCK_SLACK_S]
        return min(due, default=math.inf)

    def _take_slot(self, victim: Ticket, ticket: Ticket) -> None:
        on_preempt = victim.on_preempt
        self._remove(victim, "preempted")
        self.preemptions += 1
        if on_preempt is not None:
            on_preempt(victim)
        # The slot changes hands: the head of the taker's tier gets it, even where the victim's tier is now
        # below its minimum (taken for a waiter, it would otherwise go straight back), unless a waiter of a
        # higher tier can use it. Then the best waiter gets whatever is left.
        if not any(q and self._tiers[name].priority < ticket.priority and self._has_room(name)
                   for name, q in self._waiting.items()):
            self._admit(self._waiting[ticket.tier].popleft())
        self._dispatch()

    def reclaim_for(self, ticket: Ticket) -> Ticket | None:
        """Free a slot for a waiting `ticket` that would run within its share by preempting a borrowed
        request of a lower tier (the newest of the lowest tier with one); returns it, or None."""
        if ticket.state != "waiting" or not self._within_share(ticket.tier):
            return None
        victim = self.borrower_for(ticket)
        if victim is None or not self._has_room(ticket.tier, victim):
            return None
        self.reclaims += 1
        self._take_slot(victim, ticket)
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
            if victim is not None and self._has_room(ticket.tier, victim):
                self.reclaims += victim is borrower
                self._take_slot(victim, ticket)
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


def _later_s(delay_ms: int, preempt_after_ms: int | None) -> float:
    """A `preempt_delays_ms` entry in seconds, or 0 when it is no later than the first attempt."""
    return delay_ms / 1000.0 if delay_ms > (preempt_after_ms or 0) else 0.0


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
                    # A taken slot goes to this tier's head or a higher waiter: reclaim again while borrowers
                    # help. Once none does, the next slot to free goes to a waiter of this tier or a higher
                    # one (or to a tier below its minimum), so there is nothing to retry: the last resort's
                    # timer takes over.
                    while ticket.state == "waiting" and self.core.reclaim_for(ticket) is not None:
                        pass
                    reclaim_at = math.inf
                    continue
                if now >= preempt_at:
                    # The freed slot may go to an earlier higher waiter: try again one period later, or
                    # sooner when a later tier of `preempts` becomes due (`preempt_delays_ms`).
                    self.core.preempt_for(ticket)
                    preempt_at = min(self._clock() + preempt_ms / 1000.0, self.core.next_preempt_at(ticket))
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
