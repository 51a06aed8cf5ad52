"""Slow (pbkdf2) key checks run off the event loop, once per key at a time, and refusals are remembered briefly."""

from __future__ import annotations

import asyncio
import time

import pytest

from lab.gateway.auth import KeyStore, hash_key
from lab.gateway.config import KeyConfig
from lab.gateway.errors import GatewayError
from lab.gateway.key_checks import KeyChecks
from tests.gateway.fakes import FakeClock

PERSON = KeyConfig("person", hash_key("correct horse", "pbkdf2"), "batch")
TOKEN = KeyConfig("token", hash_key("sk-random-token"), "vip")


def test_a_flood_of_one_wrong_key_costs_one_slow_check_and_the_loop_keeps_turning():
    async def scenario() -> tuple[list, int, float]:
        checks = KeyChecks(KeyStore((PERSON, TOKEN)))
        lags: list[float] = []

        async def ticker() -> None:  # how late a 10 ms sleep wakes: the loop's responsiveness
            while True:
                started = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - started - 0.01)

        tick = asyncio.create_task(ticker())
        found = await asyncio.gather(*(checks.lookup("sk-wrong") for _ in range(100)))
        found += [await checks.lookup("sk-wrong") for _ in range(100)]  # then from memory
        tick.cancel()
        checks.close()
        return found, checks.slow_checks, max(lags)

    found, slow_checks, worst_lag_s = asyncio.run(scenario())
    assert found == [None] * 200 and slow_checks == 1
    assert worst_lag_s < 0.1  # one pbkdf2 takes ~0.17 s here: on the loop it would have stalled it that long


def test_the_right_slow_key_is_found_and_remembered_and_fast_keys_never_wait():
    async def scenario() -> tuple:
        checks = KeyChecks(KeyStore((PERSON, TOKEN)))
        person = await checks.lookup("correct horse")
        again = await checks.lookup("correct horse")
        token = await checks.lookup("sk-random-token")
        checks.close()
        return person, again, token, checks.slow_checks

    person, again, token, slow_checks = asyncio.run(scenario())
    assert (person, again, token, slow_checks) == (PERSON, PERSON, TOKEN, 1)


def test_too_many_distinct_keys_waiting_get_a_503_not_an_unbounded_queue():
    async def scenario() -> list:
        checks = KeyChecks(KeyStore((PERSON,)), max_pending=4)
        outcomes = await asyncio.gather(*(checks.lookup(f"sk-guess-{i}") for i in range(8)), return_exceptions=True)
        checks.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[:4] == [None] * 4
    assert all(isinstance(o, GatewayError) and o.status == 503 and o.code == "key_checks_busy" for o in outcomes[4:])


def test_refusals_are_remembered_for_their_ttl_in_a_bounded_lru():
    clock = FakeClock()
    store = KeyStore((PERSON,), refused_size=2, refused_ttl_s=60, clock=clock)
    for key in ("a", "b"):
        store.remember(key, store.check_slow(key))
    assert store.cached("a").known and store.cached("b").known
    store.remember("c", None)  # evicts the least recently used: "a" (b was read after it)
    assert not store.cached("a").known and store.cached("b").known and store.cached("c").known
    clock.advance(61)
    assert not store.cached("b").known  # expired: checked again next time
    assert store.lookup("correct horse") == PERSON and store.cached("correct horse").key == PERSON


@pytest.mark.parametrize("key", [None, ""])
def test_no_key_is_answered_from_memory(key):
    store = KeyStore((PERSON,), anonymous_tier="batch")
    answer = store.cached(key)
    assert answer.known and answer.key.tier == "batch"
