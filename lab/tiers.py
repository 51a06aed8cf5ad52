"""The QoS tiers, one table: names, priorities, concurrency caps and deadlines (dependency-free).

The article's four tiers, VIP > realtime > async > batch, with its example's numbers for VIP (32
concurrent, 500 ms) and realtime (64, 2000 ms); the article gives none for async and batch, so these
are the lab's: 128 concurrent / 30 s and 32 / 120 s. A tier's `timeout_ms` is its deadline twice
over: the longest a request waits in the gateway's queue before an explicit error, and the time to
first token within which it meets its SLO (the simulator's and the studies' reading).

Readers, which must agree with this table (`tests/test_tiers.py` fails if one does not): the
gateway's defaults (`lab.gateway.config.DEFAULT_TIERS`) and its example config
(`deploy/gateway.example.yaml`), the fleet simulator (`lab.scale.tiers.default_tiers`) and the tier
mixes the studies send (`lab.studies.priority`). What only one reader needs (token buckets and
slot shares in the gateway, traffic shares and queue caps in the simulator) stays with that reader.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TierSpec:
    name: str  # the gateway's key-to-tier name, in lower case
    priority: int  # lower is served first; sent to replicas as vLLM's `priority`
    max_concurrency: int  # requests of the tier in flight to replicas at once
    timeout_ms: int  # queue deadline, and the TTFT within which a request meets its SLO

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0


TIERS: tuple[TierSpec, ...] = (  # highest priority first
    TierSpec("vip", priority=0, max_concurrency=32, timeout_ms=500),
    TierSpec("realtime", priority=1, max_concurrency=64, timeout_ms=2_000),
    TierSpec("async", priority=2, max_concurrency=128, timeout_ms=30_000),
    TierSpec("batch", priority=3, max_concurrency=32, timeout_ms=120_000),
)
TIER_NAMES: tuple[str, ...] = tuple(t.name for t in TIERS)


def tier(name: str) -> TierSpec:
    """The tier called `name`; a clear error naming the valid ones otherwise."""
    for spec in TIERS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown tier {name!r}; the tiers are {', '.join(TIER_NAMES)}")
