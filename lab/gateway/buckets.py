"""Token buckets per key and per tier, in requests and in tokens.

Contract: `TokenBucket(rate_per_s, burst, clock)` starts full and refills continuously;
`wait_s(amount)` is how long until `amount` could be taken (0.0 when it can be now) and `take`
removes it. `RateLimiter.admit(key, tier, tokens)` checks the four buckets a request draws from
(key requests, key tokens, tier requests, tier tokens) and takes from all of them or from none, so a
request refused by one bucket does not drain the others. A refusal carries `retry_after_s`, the
time until every bucket could serve it, for the 429's Retry-After header. `clock` is any
zero-argument callable returning seconds (time.monotonic in service, a fake in tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lab.gateway.config import BucketLimit, KeyConfig, TierConfig

Clock = Callable[[], float]


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._level = burst
        self._stamp = clock()

    def _refill(self, now: float | None) -> None:
        if now is None:
            now = self._clock()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    @property
    def level(self) -> float:
        self._refill(None)
        return self._level

    def wait_s(self, amount: float, now: float | None = None) -> float:
        """Seconds until `amount` is available; inf when it exceeds the burst (never). `now`: the clock's
        reading, when the caller has one (one read for the four buckets of a request)."""
        if amount > self.burst:
            return math.inf
        self._refill(now)
        missing = amount - self._level
        return 0.0 if missing <= 0 else missing / self.rate_per_s

    def take(self, amount: float, now: float | None = None) -> None:
        self._refill(now)
        self._level -= amount


@dataclass(frozen=True)
class Admission:
    admitted: bool
    retry_after_s: float = 0.0  # inf: the request is larger than a bucket's burst, retrying cannot help
    bucket: str = ""  # which bucket refused, e.g. "key tokens"


ADMITTED = Admission(True)


class RateLimiter:
    """The buckets of every key and every tier, created on first use."""

    def __init__(self, tiers: tuple[TierConfig, ...], clock: Clock) -> None:
        self._tiers = {t.name: t for t in tiers}
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[TokenBucket, TokenBucket]] = {}

    def _pair(self, scope: str, name: str, limit: BucketLimit) -> tuple[TokenBucket, TokenBucket]:
        pair = self._buckets.get((scope, name))
        if pair is None:
            pair = (TokenBucket(limit.requests_per_s, limit.request_burst, self._clock),
                    TokenBucket(limit.tokens_per_s, limit.token_burst, self._clock))
            self._buckets[(scope, name)] = pair
        return pair

    def admit(self, key: KeyConfig, tokens: float) -> Admission:
        tier = self._tiers[key.tier]
        key_requests, key_tokens = self._pair("key", key.name, tier.key_limit)
        tier_requests, tier_tokens = self._pair("tier", tier.name, tier.tier_limit)
        draws = (("key requests", key_requests, 1.0), ("key tokens", key_tokens, tokens),
                 ("tier requests", tier_requests, 1.0), ("tier tokens", tier_tokens, tokens))
        now = self._clock()
        waits = [(bucket.wait_s(amount, now), label) for label, bucket, amount in draws]
        longest, label = max(waits)
        if longest > 0:
            return Admission(False, longest, label)
        for _, bucket, amount in draws:
            bucket.take(amount, now)
        return ADMITTED
