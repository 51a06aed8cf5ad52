"""The priority queue: VIP before batch, per-tier concurrency, deadlines with an explicit error."""

from __future__ import annotations

import asyncio
import time

import pytest

from lab.gateway.config import BucketLimit, TierConfig
from lab.gateway.queue import AdmissionQueue, PriorityAdmission, QueueTimeout
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
