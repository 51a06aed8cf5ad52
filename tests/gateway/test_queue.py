"""The priority queue: VIP before batch, per-tier concurrency, deadlines with an explicit error."""

from __future__ import annotations

import asyncio
import gc
import random
import time

import pytest

from lab.gateway.config import BucketLimit, TierConfig
from lab.gateway.queue import AdmissionQueue, PriorityAdmission, QueueTimeout, Ticket
from tests.gateway.fakes import FakeClock

LIMIT = BucketLimit(1, 1, 1, 1)


def tiers(vip_conc=8, batch_conc=8, vip_timeout_ms=500, batch_timeout_ms=60_000):
    return (TierConfig("vip", 0, vip_conc, vip_timeout_ms, LIMIT, LIMIT),
            TierConfig("batch", 3, batch_conc, batch_timeout_ms, LIMIT, LIMIT))


def test_vip_gets_the_freed_slot_before_earlier_batch():
    queue = PriorityAdmission(tiers(), max_inflight=1, clock=FakeClock())
    running = queue.submit("batch")
    batch_waiting = [queue.submit("batch") for _ in range(3)]
    vip = queue.submit("vip")  # arrives last
    assert running.state == "admitted" and vip.state == "waiting"
    queue.release(running)
    assert vip.state == "admitted" and all(t.state == "waiting" for t in batch_waiting)
    queue.release(vip)
    assert [t.state for t in batch_waiting] == ["admitted", "waiting", "waiting"]  # FIFO within a tier


def test_per_tier_concurrency_limits_one_tier_without_blocking_another():
    queue = PriorityAdmission(tiers(batch_conc=2), max_inflight=100, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(4)]
    assert [t.state for t in batch] == ["admitted", "admitted", "waiting", "waiting"]
    assert queue.inflight("batch") == 2 and queue.waiting("batch") == 2
    vip = queue.submit("vip")
    assert vip.state == "admitted"  # batch's limit does not hold VIP back
    queue.release(batch[0])
    assert batch[2].state == "admitted" and queue.inflight("batch") == 2


def test_deadline_expiry_removes_only_overdue_waiters():
    clock = FakeClock()
    queue = PriorityAdmission(tiers(vip_conc=1, batch_conc=1), max_inflight=100, clock=clock)
    queue.submit("vip"), queue.submit("batch")
    vip_waiting, batch_waiting = queue.submit("vip"), queue.submit("batch")
    clock.advance(0.499)
    assert queue.expire(clock()) == []
    clock.advance(0.002)  # past VIP's 500 ms, far from batch's 60 s
    assert queue.expire(clock()) == [vip_waiting]
    assert vip_waiting.state == "expired" and batch_waiting.state == "waiting" and queue.waiting("vip") == 0


def test_release_twice_frees_one_slot():
    queue = PriorityAdmission(tiers(batch_conc=1), max_inflight=100, clock=FakeClock())
    first, second, third = (queue.submit("batch") for _ in range(3))
    queue.release(first)
    queue.release(first)
    assert second.state == "admitted" and third.state == "waiting"


def test_async_acquire_times_out_with_tier_and_waited_ms():
    async def scenario():
        queue = AdmissionQueue(tiers(vip_conc=1, vip_timeout_ms=50), max_inflight=100, clock=time.monotonic)
        holder = await queue.acquire("vip")
        with pytest.raises(QueueTimeout) as caught:
            await queue.acquire("vip")
        assert caught.value.tier == "vip" and 45 <= caught.value.waited_ms < 1000
        assert "vip" in str(caught.value) and "50 ms" in str(caught.value)
        assert queue.core.waiting("vip") == 0
        queue.release(holder)
        assert (await queue.acquire("vip")).state == "admitted"

    asyncio.run(scenario())


def test_async_waiter_is_woken_in_priority_order_and_cancel_leaves_the_queue():
    async def scenario():
        queue = AdmissionQueue(tiers(), max_inflight=1, clock=time.monotonic)
        holder = await queue.acquire("batch")
        order: list[str] = []

        async def wait(tier):
            ticket = await queue.acquire(tier)
            order.append(tier)
            queue.release(ticket)

        batch_task = asyncio.create_task(wait("batch"))
        await asyncio.sleep(0.01)
        vip_task = asyncio.create_task(wait("vip"))
        gone = asyncio.create_task(wait("batch"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert queue.core.waiting("batch") == 1  # the cancelled waiter left
        queue.release(holder)
        await asyncio.gather(batch_task, vip_task)
        assert order == ["vip", "batch"]

    asyncio.run(scenario())


def reserving_tiers(batch_share=0.5, async_share=0.75, vip_preempt_ms=None, vip_preempts=("batch", "async")):
    return (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT, preempt_after_ms=vip_preempt_ms, preempts=vip_preempts),
            TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT, max_inflight_share=async_share),
            TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=batch_share))


def test_lower_tiers_leave_their_reserved_slots_free_for_higher_ones():
    queue = PriorityAdmission(reserving_tiers(), max_inflight=8, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(6)]
    assert [t.state for t in batch] == ["admitted"] * 4 + ["waiting"] * 2  # floor(0.5 * 8) = 4 slots
    async_ = [queue.submit("async") for _ in range(3)]
    assert [t.state for t in async_] == ["admitted", "admitted", "waiting"]  # all tiers together < 6
    vip = [queue.submit("vip") for _ in range(3)]
    assert [t.state for t in vip] == ["admitted", "admitted", "waiting"]  # the last 2 slots were VIP's
    queue.release(batch[0])
    assert vip[2].state == "admitted" and batch[4].state == "waiting"  # a freed slot goes to the highest waiter
    queue.release(vip[0]), queue.release(vip[1]), queue.release(vip[2])
    assert async_[2].state == "admitted" and batch[4].state == "waiting"  # 6 in flight: batch still waits


def test_preempt_for_takes_the_newest_request_of_the_first_tier_in_preempts():
    queue = PriorityAdmission(reserving_tiers(batch_share=1.0, async_share=1.0), max_inflight=3, clock=FakeClock())
    preempted: list[Ticket] = []
    old_batch, new_batch = (queue.submit("batch", on_preempt=preempted.append) for _ in range(2))
    running_async = queue.submit("async", on_preempt=preempted.append)
    vip = queue.submit("vip")
    assert vip.state == "waiting" and queue.inflight() == 3
    assert queue.preempt_for(vip) is new_batch  # lowest tier first, newest first: least work lost
    assert preempted == [new_batch] and new_batch.state == "preempted" and vip.state == "admitted"
    assert old_batch.state == running_async.state == "admitted" and queue.inflight() == 3
    queue.release(new_batch)  # its owner's cleanup: a no-op, the slot is gone already
    assert queue.inflight() == 3 and queue.preemptions == 1
    second_vip = queue.submit("vip")
    assert queue.preempt_for(second_vip) is old_batch
    third_vip = queue.submit("vip")
    assert queue.preempt_for(third_vip) is running_async  # no batch left: the next tier in VIP's list
    assert queue.preempt_for(queue.submit("vip")) is None  # nothing of batch or async runs any more


def test_nothing_is_preempted_for_a_tier_held_back_by_its_own_cap_or_without_a_victim():
    tiers = (TierConfig("vip", 0, 1, 500, LIMIT, LIMIT, preempt_after_ms=10, preempts=("batch",)),
             TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT))
    queue = PriorityAdmission(tiers, max_inflight=2, clock=FakeClock())
    queue.submit("vip"), queue.submit("batch")
    waiting_vip = queue.submit("vip")
    assert queue.preempt_for(waiting_vip) is None  # VIP's own cap (1) holds it: a batch slot would not help
    # Realtime may start below 2 of 4 slots: with 4 held, freeing one batch slot would not let it in.
    tiers = (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT),
             TierConfig("realtime", 1, 8, 2000, LIMIT, LIMIT, max_inflight_share=0.5, preempt_after_ms=10,
                        preempts=("batch",)),
             TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=0.5))
    queue = PriorityAdmission(tiers, max_inflight=4, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(2)]
    vips = [queue.submit("vip") for _ in range(2)]
    realtime = queue.submit("realtime")
    assert queue.inflight() == 4 and realtime.state == "waiting"
    assert queue.preempt_for(realtime) is None and all(t.state == "admitted" for t in batch + vips)


def test_async_waiter_preempts_after_its_tiers_delay_and_gets_the_slot():
    async def scenario():
        queue = AdmissionQueue(reserving_tiers(batch_share=1.0, async_share=1.0, vip_preempt_ms=50), max_inflight=2,
                               clock=time.monotonic)
        preempted: list[Ticket] = []
        batch = [await queue.acquire("batch", on_preempt=preempted.append) for _ in range(2)]
        started = time.monotonic()
        vip = await queue.acquire("vip")
        waited_ms = (time.monotonic() - started) * 1000
        assert vip.state == "admitted" and 45 <= waited_ms < 400  # after its 50 ms, well inside its 500 ms
        assert preempted == [batch[1]] and batch[0].state == "admitted"

    asyncio.run(scenario())


def test_a_tier_preempts_only_the_tiers_it_names_in_their_order():
    # The article's four tiers; VIP may take realtime's slot, but only when no batch or async request runs.
    tiers = (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT, preempt_after_ms=10, preempts=("batch", "async", "realtime")),
             TierConfig("realtime", 1, 8, 2000, LIMIT, LIMIT, preempt_after_ms=10, preempts=("batch",)),
             TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT),
             TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT))
    queue = PriorityAdmission(tiers, max_inflight=4, clock=FakeClock())
    old_realtime, new_realtime = queue.submit("realtime"), queue.submit("realtime")
    running_async, running_batch = queue.submit("async"), queue.submit("batch")
    waiting_realtime = queue.submit("realtime")
    assert queue.preempt_for(waiting_realtime) is running_batch and waiting_realtime.state == "admitted"
    assert queue.preempt_for(queue.submit("realtime")) is None  # realtime never takes async's slot: not in its list
    vips = [queue.submit("vip") for _ in range(3)]
    assert [queue.preempt_for(v) for v in vips] == [running_async, waiting_realtime, new_realtime]
    assert [v.state for v in vips] == ["admitted"] * 3 and old_realtime.state == "admitted"
    assert queue.preempt_for(queue.submit("vip")) is old_realtime
    assert queue.preempt_for(queue.submit("vip")) is None  # VIP never preempts VIP


def test_acquire_and_release_leave_no_reference_cycles_for_the_gc():
    # A ticket's callbacks hold the waiter's future, whose result is the ticket: were they kept, every
    # request would leave a cycle behind, and the collector's passes would pause the request path.
    async def scenario():
        queue = AdmissionQueue(tiers(), max_inflight=1, clock=time.monotonic)
        for _ in range(100):
            ticket = await queue.acquire("vip", on_preempt=lambda _: None)
            queue.release(ticket)
        waiting = asyncio.get_running_loop().create_task(queue.acquire("batch", on_preempt=lambda _: None))
        held = await queue.acquire("vip")
        await asyncio.sleep(0)
        queue.release(held)  # the batch waiter is admitted through its on_admit callback
        queue.release(await waiting)

    asyncio.run(scenario())  # the loop's own start-up leaves some garbage: collect it first
    gc.collect()
    gc.disable()
    try:
        asyncio.run(scenario())
        assert gc.collect() < 50  # the event loop's few; one cycle per request would be >= 300
    finally:
        gc.enable()


def lending_tiers(vip_reclaim_ms=0, vip_preempt_ms=None, async_borrow=False, batch_borrow=True):
    vip_preempts = ("batch", "async") if vip_preempt_ms is not None else ()
    return (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT, reclaim_after_ms=vip_reclaim_ms, preempt_after_ms=vip_preempt_ms,
                       preempts=vip_preempts),
            TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT, max_inflight_share=0.75, borrow=async_borrow),
            TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=0.5, borrow=batch_borrow))


def test_a_borrowing_tier_uses_idle_slots_above_its_share_and_a_strict_one_does_not():
    queue = PriorityAdmission(lending_tiers(), max_inflight=8, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(9)]
    assert [t.state for t in batch] == ["admitted"] * 8 + ["waiting"]  # every idle slot, not just floor(0.5 * 8)
    assert [t.borrowed for t in batch[:8]] == [False] * 4 + [True] * 4
    assert queue.inflight() == 8 and queue.borrowed("batch") == 4
    strict = PriorityAdmission(lending_tiers(batch_borrow=False), max_inflight=8, clock=FakeClock())
    assert [strict.submit("batch").state for _ in range(5)] == ["admitted"] * 4 + ["waiting"]  # the plain path


def test_a_borrowed_slot_counts_as_free_for_a_higher_tier_within_its_share():
    queue = PriorityAdmission(lending_tiers(), max_inflight=8, clock=FakeClock())
    preempted: list[Ticket] = []
    batch = [queue.submit("batch", on_preempt=preempted.append) for _ in range(8)]
    async_ = queue.submit("async")
    assert async_.state == "waiting"  # no free slot: it needs one reclaimed
    assert queue.reclaim_for(async_) is batch[7] and async_.state == "admitted" and not async_.borrowed
    assert preempted == [batch[7]] and batch[7].state == "preempted" and queue.reclaims == 1
    assert queue.inflight() == 8 and queue.borrowed("batch") == 3


def test_reclaim_takes_the_newest_borrower_of_the_lowest_tier_and_never_a_request_within_its_share():
    queue = PriorityAdmission(lending_tiers(async_borrow=True), max_inflight=8, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(4)]  # within batch's 4
    async_ = [queue.submit("async") for _ in range(3)]  # 2 within async's 6, then 1 borrowed
    late_batch = queue.submit("batch")  # borrowed
    assert [t.borrowed for t in async_] == [False, False, True] and late_batch.borrowed and queue.inflight() == 8
    vips = [queue.submit("vip") for _ in range(3)]
    assert [queue.reclaim_for(v) for v in vips] == [late_batch, async_[2], None]  # batch first, then async
    assert [v.state for v in vips] == ["admitted", "admitted", "waiting"]
    assert all(t.state == "admitted" for t in batch + async_[:2])  # within their share: untouched by a reclaim


def test_a_waiter_above_its_own_share_or_of_a_lower_tier_reclaims_nothing():
    queue = PriorityAdmission(lending_tiers(async_borrow=True), max_inflight=8, clock=FakeClock())
    async_ = [queue.submit("async") for _ in range(7)]  # 6 within, 1 borrowed
    batch = queue.submit("batch")  # borrowed, the 8th slot
    assert batch.borrowed and async_[6].borrowed
    waiting_async = queue.submit("async")  # would run above async's share: borrowers do not evict borrowers
    assert queue.reclaim_for(waiting_async) is None and batch.state == "admitted"
    waiting_batch = queue.submit("batch")
    assert queue.reclaim_for(waiting_batch) is None and async_[6].state == "admitted"  # never a higher tier's


def test_a_freed_slot_goes_to_a_higher_waiter_before_a_borrowing_tier():
    queue = PriorityAdmission(lending_tiers(vip_reclaim_ms=None), max_inflight=4, clock=FakeClock())
    batch = [queue.submit("batch") for _ in range(4)]  # 2 within, 2 borrowed
    more_batch, vip = queue.submit("batch"), queue.submit("vip")
    queue.release(batch[0])
    assert vip.state == "admitted" and more_batch.state == "waiting"
    queue.release(batch[1])
    assert more_batch.state == "admitted" and not more_batch.borrowed  # within again: only 1 of 2 within held


def _random_traffic_tiers(with_minimums: bool) -> tuple[TierConfig, ...]:
    if not with_minimums:
        return lending_tiers(vip_preempt_ms=100, async_borrow=True)
    # Minimums on two tiers (the conflict rule), realtime's own last resort, VIP's later entries of preempts.
    return (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT, preempt_after_ms=100, preempts=("batch", "async", "realtime"),
                       preempt_delays_ms=(100, 200, 200)),
            TierConfig("realtime", 1, 8, 2000, LIMIT, LIMIT, max_inflight_share=0.9, preempt_after_ms=100,
                       preempts=("batch", "async")),
            TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT, max_inflight_share=0.75, borrow=True, min_inflight=1),
            TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=0.5, borrow=True, min_inflight=2))


@pytest.mark.parametrize("with_minimums", [False, True])
def test_lending_never_leaks_or_starves_under_random_traffic(with_minimums):
    rng = random.Random(0)
    clock = FakeClock()
    tiers = _random_traffic_tiers(with_minimums)
    names = [t.name for t in tiers]
    queue = PriorityAdmission(tiers, max_inflight=6, clock=clock)
    preempted: list[Ticket] = []
    tickets: list[Ticket] = []
    for _ in range(3000):
        roll = rng.random()
        running = [t for t in tickets if t.state == "admitted"]
        waiting = [t for t in tickets if t.state == "waiting"]
        if roll < 0.4:
            tickets.append(queue.submit(rng.choice(names), on_preempt=preempted.append))
        elif roll < 0.75 and running:
            queue.release(rng.choice(running))
        elif roll < 0.9 and waiting:
            queue.reclaim_for(rng.choice(waiting))
        elif waiting:
            queue.preempt_for(rng.choice(waiting))
        clock.advance(0.001)
        running = [t for t in tickets if t.state == "admitted"]
        assert queue.inflight() == len(running) <= 6
        assert queue._within == sum(not t.borrowed for t in running)  # the within-share count never drifts
        assert all(t.borrowed for t in running if t.guaranteed)
        for tier in names:
            # work-conserving: nobody waits while its tier could start
            assert queue.waiting(tier) == 0 or not queue._has_room(tier)
            # a minimum holds free slots for its waiters only as long as there are free slots: never idle ones
            assert queue.shortfall(tier) == 0 or queue.inflight() == 6
    # every preempted request was told so, once; lending and both ways of taking slots back happened
    assert sorted(map(id, preempted)) == sorted(id(t) for t in tickets if t.state == "preempted")
    assert queue.reclaims > 5 and queue.preemptions > queue.reclaims and any(t.borrowed for t in tickets)
    assert any(t.guaranteed for t in tickets) == with_minimums
    for _ in range(len(tickets)):  # drain: every waiter is admitted in the end, every slot comes back
        running = [t for t in tickets if t.state == "admitted"]
        if not running:
            break
        queue.release(running[0])
    assert all(t.state in ("released", "preempted") for t in tickets) and queue.inflight() == 0 and queue._within == 0


def test_async_waiter_reclaims_a_borrowed_slot_at_once_but_preempts_one_within_share_only_after_its_delay():
    async def scenario():
        tiers = lending_tiers(vip_preempt_ms=100)
        queue = AdmissionQueue(tiers, max_inflight=4, clock=time.monotonic)
        preempted: list[Ticket] = []
        batch = [await queue.acquire("batch", on_preempt=preempted.append) for _ in range(4)]  # 2 within, 2 lent
        waits = []
        for _ in range(3):
            started = time.monotonic()
            await queue.acquire("vip")
            waits.append((time.monotonic() - started) * 1000)
        assert preempted == [batch[3], batch[2], batch[1]]  # the borrowed ones first, newest first
        assert waits[0] < 20 and waits[1] < 20  # reclaimed at once
        assert 95 <= waits[2] < 400  # batch[1] ran within its share: preempted only after VIP's 100 ms
        assert queue.core.reclaims == 2 and queue.core.preemptions == 3

    asyncio.run(scenario())


def test_reclaim_after_ms_delays_the_reclaim_and_null_never_reclaims():
    async def scenario(reclaim_ms):
        queue = AdmissionQueue(lending_tiers(vip_reclaim_ms=reclaim_ms), max_inflight=2, clock=time.monotonic)
        batch = [await queue.acquire("batch") for _ in range(2)]  # 1 within, 1 borrowed
        started = time.monotonic()
        try:
            await queue.acquire("vip")
        except QueueTimeout:
            return None, batch
        return (time.monotonic() - started) * 1000, batch

    waited_ms, batch = asyncio.run(scenario(60))
    assert 55 <= waited_ms < 400 and batch[1].state == "preempted"
    waited_ms, batch = asyncio.run(scenario(None))
    assert waited_ms is None and [t.state for t in batch] == ["admitted", "admitted"]  # VIP timed out instead


def test_a_waiter_held_back_by_its_share_preempts_a_request_within_share_of_the_first_tier_not_the_next():
    tiers = (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT),
             TierConfig("realtime", 1, 8, 2000, LIMIT, LIMIT, max_inflight_share=0.75, preempt_after_ms=10,
                        preempts=("batch", "async")),
             TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT, max_inflight_share=0.75),
             TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=0.25, borrow=True))
    queue = PriorityAdmission(tiers, max_inflight=4, clock=FakeClock())
    within_batch = queue.submit("batch")  # within batch's 1
    async_ = queue.submit("async")
    vip = queue.submit("vip")
    borrowed_batch = queue.submit("batch")
    assert borrowed_batch.borrowed and queue.inflight() == 4
    realtime = queue.submit("realtime")  # 3 within-share held: realtime (3 slots) is held back by its share
    assert queue.reclaim_for(realtime) is None  # the borrowed slot would not let it in
    assert queue.preempt_for(realtime) is within_batch  # not the newest batch (borrowed), nor async's
    assert realtime.state == "admitted" and async_.state == vip.state == borrowed_batch.state == "admitted"


def minimum_tiers(batch_min=1, async_min=0, async_share=1.0, vip_delays=(), realtime_preempts=()):
    """VIP (top, share 1.0) > realtime > async > batch (borrows above half the slots), with minimums."""
    vip_preempts = ("batch", "async", "realtime")
    return (TierConfig("vip", 0, 8, 500, LIMIT, LIMIT, reclaim_after_ms=0, preempt_after_ms=100, preempts=vip_preempts,
                       preempt_delays_ms=vip_delays),
            TierConfig("realtime", 1, 8, 2000, LIMIT, LIMIT, preempt_after_ms=100 if realtime_preempts else None,
                       preempts=realtime_preempts),
            TierConfig("async", 2, 8, 30_000, LIMIT, LIMIT, max_inflight_share=async_share, min_inflight=async_min),
            TierConfig("batch", 3, 8, 60_000, LIMIT, LIMIT, max_inflight_share=0.5, borrow=True,
                       min_inflight=batch_min))


def test_a_freed_slot_goes_to_a_tier_below_its_minimum_before_an_earlier_higher_waiter():
    queue = PriorityAdmission(minimum_tiers(), max_inflight=4, clock=FakeClock())
    realtime = [queue.submit("realtime") for _ in range(5)]  # no batch waits: the minimum holds nothing
    assert [t.state for t in realtime] == ["admitted"] * 4 + ["waiting"]
    batch = queue.submit("batch")
    assert batch.state == "waiting" and queue.shortfall("batch") == 1
    queue.release(realtime[0])
    assert batch.state == "admitted" and realtime[4].state == "waiting"  # the held slot was batch's
    assert batch.borrowed and batch.guaranteed  # above batch's share (2 of 4 within-share held), for its minimum
    queue.release(realtime[1])
    assert realtime[4].state == "admitted"  # minimum met: priority order again


def test_a_minimum_holds_no_more_slots_than_the_tier_has_waiters():
    queue = PriorityAdmission(minimum_tiers(batch_min=3), max_inflight=4, clock=FakeClock())
    realtime = [queue.submit("realtime") for _ in range(4)]
    batch = queue.submit("batch")  # one waiter: one slot held, not three
    assert queue.shortfall("batch") == 1
    more_realtime = queue.submit("realtime")
    queue.release(realtime[0])
    assert batch.state == "admitted" and queue.shortfall("batch") == 0
    queue.release(realtime[1])
    assert more_realtime.state == "admitted"  # batch runs 1 of its 3 but waits for nothing: nothing held


def test_the_top_tier_is_never_held_back_by_a_minimum():
    queue = PriorityAdmission(minimum_tiers(), max_inflight=4, clock=FakeClock())
    realtime = [queue.submit("realtime") for _ in range(4)]
    batch, vip = queue.submit("batch"), queue.submit("vip")
    queue.release(realtime[0])
    assert vip.state == "admitted" and batch.state == "waiting"  # VIP first: it would take the slot back anyway
    queue.release(realtime[1])
    assert batch.state == "admitted"


def test_vip_reclaims_the_guaranteed_request_at_once_but_realtime_only_as_its_last_resort():
    queue = PriorityAdmission(minimum_tiers(realtime_preempts=("batch",)), max_inflight=4, clock=FakeClock())
    preempted: list[Ticket] = []
    realtime = [queue.submit("realtime") for _ in range(3)]
    guaranteed = queue.submit("batch", on_preempt=preempted.append)  # the 4th slot: batch's minimum
    waiting_batch = queue.submit("batch")
    assert guaranteed.guaranteed and waiting_batch.state == "waiting"
    waiting_realtime = queue.submit("realtime")
    # Realtime is held by the minimum: a reclaim would only hand the slot back to batch.
    assert queue.reclaim_for(waiting_realtime) is None and guaranteed.state == "admitted"
    # Its last resort takes it; the slot changes hands although batch now runs below its minimum.
    assert queue.preempt_for(waiting_realtime) is guaranteed and waiting_realtime.state == "admitted"
    assert waiting_batch.state == "waiting" and queue.shortfall("batch") == 1
    queue.release(realtime[0])
    assert waiting_batch.state == "admitted" and waiting_batch.guaranteed  # the freed slot restores the minimum
    vip = queue.submit("vip")
    assert queue.reclaim_for(vip) is waiting_batch and vip.state == "admitted"  # VIP may: it is the top tier
    assert preempted == [guaranteed] and queue.reclaims == 1 and queue.preemptions == 2


def test_two_minimums_never_hold_one_free_slot_against_each_other():
    queue = PriorityAdmission(minimum_tiers(batch_min=1, async_min=1), max_inflight=4, clock=FakeClock())
    realtime = [queue.submit("realtime") for _ in range(4)]
    batch, async_ = queue.submit("batch"), queue.submit("async")
    assert queue.shortfall("batch") == queue.shortfall("async") == 1
    queue.release(realtime[0])
    assert async_.state == "admitted" and batch.state == "waiting"  # the higher minimum first, no deadlock
    queue.release(realtime[1])
    assert batch.state == "admitted" and queue.inflight() == 4


def test_later_entries_of_preempts_wait_their_own_delay():
    clock = FakeClock()
    queue = PriorityAdmission(minimum_tiers(batch_min=0, vip_delays=(100, 300, 300)), max_inflight=2, clock=clock)
    async_ = [queue.submit("async") for _ in range(2)]
    vip = queue.submit("vip")
    start = clock()
    clock.advance(0.1)  # VIP's preempt_after_ms: batch's slot would be due, async's not yet
    assert queue.preempt_for(vip) is None and queue.next_preempt_at(vip) == pytest.approx(start + 0.3)
    clock.advance(0.2)
    assert queue.preempt_for(vip) is async_[1] and vip.state == "admitted"
    assert queue.next_preempt_at(queue.submit("vip")) == pytest.approx(clock() + 0.3)


def test_async_waiter_preempts_a_later_tier_of_its_list_only_after_that_tiers_delay():
    async def scenario():
        tiers = minimum_tiers(batch_min=0, vip_delays=(50, 150, 150))
        queue = AdmissionQueue(tiers, max_inflight=2, clock=time.monotonic)
        preempted: list[Ticket] = []
        running = [await queue.acquire("async", on_preempt=preempted.append) for _ in range(2)]
        started = time.monotonic()
        await queue.acquire("vip")
        waited_ms = (time.monotonic() - started) * 1000
        assert preempted == [running[1]] and 145 <= waited_ms < 450  # not at 50 ms: no batch to take then

    asyncio.run(scenario())
