"""Per-tier upstream time budgets: how long a replica may keep a request before the gateway gives up on it.

Contract: `budget_of(tier, proxy)` is an `UpstreamBudget` for one tier: `first_byte_s`, from sending the
request to the replica's first body byte (a stream's first event, a JSON answer's whole body), and
`stall_s`, the longest silence between two chunks of a stream after that. A tier's
`first_byte_timeout_ms` / `stall_timeout_ms` set them; left null, they are derived from the tier's
deadline in the tier table (`lab.tiers`): first byte within max(10 s, 4 x deadline), chunks at most
max(10 s, 1 x deadline) apart, so VIP and realtime get 10 s / 10 s, async 120 s / 30 s, batch 480 s /
120 s. `first_byte_s_for(stream, max_tokens)`: a non-streaming answer's first byte is its last, so its
budget grows by `max_tokens / proxy.min_tokens_per_s` (a replica slower than that is as good as hung).
Past the first-byte budget the attempt counts as a timeout (retried on another replica, nothing having
reached the client); past the stall budget a stream ends with an explicit error event.

Why these numbers: the budget replaces the 600 s socket read timeout as what bounds a request on a hung
replica, so it must be short for the tiers with short deadlines; but a replica's own queue (lower tiers
wait behind higher ones there too) and a long prompt's prefill take seconds, hence the 10 s floor, and
the lower tiers' long deadlines say their requests may legitimately wait minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.gateway.config import ProxyConfig, TierConfig

FIRST_BYTE_FLOOR_MS = 10_000
FIRST_BYTE_DEADLINES = 4  # the first-byte budget in multiples of the tier's deadline, above the floor
STALL_FLOOR_MS = 10_000
STALL_DEADLINES = 1


def derived_first_byte_ms(timeout_ms: int) -> int:
    return max(FIRST_BYTE_FLOOR_MS, FIRST_BYTE_DEADLINES * timeout_ms)


def derived_stall_ms(timeout_ms: int) -> int:
    return max(STALL_FLOOR_MS, STALL_DEADLINES * timeout_ms)


@dataclass(frozen=True)
class UpstreamBudget:
    first_byte_s: float
    stall_s: float
    min_tokens_per_s: float  # the slowest decode a non-streaming answer is allowed

    def first_byte_s_for(self, stream: bool, max_tokens: int) -> float:
        if stream:
            return self.first_byte_s
        return self.first_byte_s + max_tokens / self.min_tokens_per_s


def budget_of(tier: TierConfig, proxy: ProxyConfig) -> UpstreamBudget:
    first_byte_ms = tier.first_byte_timeout_ms or derived_first_byte_ms(tier.timeout_ms)
    stall_ms = tier.stall_timeout_ms or derived_stall_ms(tier.timeout_ms)
    return UpstreamBudget(first_byte_ms / 1000.0, stall_ms / 1000.0, proxy.min_tokens_per_s)
