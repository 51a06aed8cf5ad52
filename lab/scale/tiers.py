"""The gateway's QoS tiers as the simulator sees them: share, priority, deadline, SLO, queue cap.

Contract: a `Tier` is one class of traffic: its `share` of arrivals, its queue `timeout_s` (a request
still queued after it times out at the gateway), its `slo_ttft_s` (time to first token that counts
as meeting the SLO) and `max_queue` (arrivals beyond it are shed). Tiers are listed highest
priority first; the simulator admits strictly by priority, FIFO inside a tier. `default_tiers()`
follows the article: VIP with a 500 ms deadline, realtime 2000 ms, async and batch tolerant.
Tier names match the gateway's (`lab.gateway`): VIP, realtime, async, batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    share: float  # fraction of arrivals
    timeout_s: float  # queue deadline at the gateway
    slo_ttft_s: float  # time to first token within which a request meets its SLO
    max_queue: int  # queued requests beyond this are shed

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError(f"tier {self.name}: share must be in [0, 1]")
        if not 0 < self.timeout_s < float("inf") or self.slo_ttft_s <= 0 or self.max_queue < 0:
            raise ValueError(f"tier {self.name}: need a finite timeout_s > 0, slo_ttft_s > 0, max_queue >= 0")


def default_tiers() -> tuple[Tier, ...]:
    return (
        Tier("VIP", share=0.05, timeout_s=0.5, slo_ttft_s=0.5, max_queue=1_000),
        Tier("realtime", share=0.45, timeout_s=2.0, slo_ttft_s=2.0, max_queue=20_000),
        Tier("async", share=0.30, timeout_s=60.0, slo_ttft_s=30.0, max_queue=200_000),
        Tier("batch", share=0.20, timeout_s=900.0, slo_ttft_s=600.0, max_queue=1_000_000),
    )


def validate_tiers(tiers: tuple[Tier, ...]) -> None:
    if not tiers:
        raise ValueError("need at least one tier")
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ValueError(f"tier names must be unique: {names}")
    total = sum(t.share for t in tiers)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"tier shares must sum to 1, got {total}")
