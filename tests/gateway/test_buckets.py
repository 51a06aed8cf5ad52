"""Token buckets with a fake clock: bursts, refill, Retry-After, all-or-nothing draws."""

from __future__ import annotations

import math

import pytest

from lab.gateway.buckets import RateLimiter, TokenBucket
from lab.gateway.config import BucketLimit, KeyConfig, TierConfig
from tests.gateway.fakes import FakeClock


def test_bucket_burst_then_refill():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2.0, burst=4.0, clock=clock)
    for _ in range(4):
        assert bucket.wait_s(1) == 0.0
        bucket.take(1)
    assert bucket.wait_s(1) == pytest.approx(0.5)  # 1 token at 2/s
    clock.advance(0.5)
    assert bucket.wait_s(1) == 0.0
    clock.advance(100)
    assert bucket.level == 4.0  # never above the burst
    assert math.isinf(bucket.wait_s(5))  # more than the burst: never


def _limiter(clock, key_limit, tier_limit):
    tier = TierConfig("vip", 0, 1, 500, tier_limit, key_limit)
    return RateLimiter((tier,), clock)


def test_key_request_bucket_refuses_with_retry_after():
    clock = FakeClock()
    limiter = _limiter(clock, BucketLimit(1, 2, 1e6, 1e6), BucketLimit(100, 100, 1e6, 1e6))
    key = KeyConfig("alice", "sha256:x", "vip")
    assert limiter.admit(key, 10).admitted and limiter.admit(key, 10).admitted
    refusal = limiter.admit(key, 10)
    assert not refusal.admitted and refusal.bucket == "key requests" and refusal.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.admit(key, 10).admitted


def test_keys_have_their_own_buckets_but_share_the_tier():
    clock = FakeClock()
    limiter = _limiter(clock, BucketLimit(1, 1, 1e6, 1e6), BucketLimit(1, 2, 1e6, 1e6))
    alice, bob, carol = (KeyConfig(n, "sha256:x", "vip") for n in ("alice", "bob", "carol"))
    assert limiter.admit(alice, 1).admitted
    assert not limiter.admit(alice, 1).admitted  # alice's own bucket is empty
    assert limiter.admit(bob, 1).admitted  # bob's is not
    refusal = limiter.admit(carol, 1)  # but the tier's 2-request burst is spent
    assert not refusal.admitted and refusal.bucket == "tier requests"


def test_token_bucket_counts_tokens_and_a_refusal_takes_nothing():
    clock = FakeClock()
    limiter = _limiter(clock, BucketLimit(100, 100, 100, 100), BucketLimit(100, 100, 1000, 150))
    key = KeyConfig("alice", "sha256:x", "vip")
    assert limiter.admit(key, 100).admitted  # key tokens now 0, tier tokens 50
    refusal = limiter.admit(key, 60)
    assert refusal.bucket == "key tokens" and refusal.retry_after_s == pytest.approx(0.6)
    clock.advance(0.6)  # key tokens back to 60; tier tokens full again (150)
    assert limiter.admit(key, 60).admitted


def test_refused_draw_leaves_other_buckets_untouched():
    clock = FakeClock()
    limiter = _limiter(clock, BucketLimit(1, 5, 1e6, 1e6), BucketLimit(1, 5, 1, 10))
    key = KeyConfig("alice", "sha256:x", "vip")
    for _ in range(3):
        assert not limiter.admit(key, 20).admitted  # tier tokens' burst is 10: never
    requests_bucket = limiter._buckets[("key", "alice")][0]
    assert requests_bucket.level == 5.0  # no request token spent by the refusals
    assert math.isinf(limiter.admit(key, 20).retry_after_s)
