"""The QoS tiers as the fleet simulator sees them: traffic share, deadline, SLO, queue cap.

Contract: a `SimulatedTier` is one class of traffic: its `share` of arrivals, its queue `timeout_s` (a
request still queued after it times out at the gateway), its `slo_ttft_s` (time to first token that
counts as meeting the SLO) and `max_queue` (arrivals beyond it are shed). Tiers are listed highest
priority first; the simulator admits strictly by priority, FIFO inside a tier. `default_tiers()`
takes names, order and deadlines from the one tier table (`lab.tiers`: VIP 500 ms, realtime 2000 ms,
async 30 s, batch 120 s; the deadline is also the SLO); the traffic shares and queue caps are the
simulator's own: a customer-service mix of mostly realtime chat, some async and batch work, few VIPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.tiers import TIERS


@dataclass(frozen=True)
class SimulatedTier:
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


# The simulator's traffic per tier: share of arrivals and queue cap (lab.tiers has the rest).
DEFAULT_SHARES = {"vip": 0.05, "realtime": 0.45, "async": 0.30, "batch": 0.20}
DEFAULT_MAX_QUEUE = {"vip": 1_000, "realtime": 20_000, "async": 200_000, "batch": 1_000_000}


def default_tiers() -> tuple[SimulatedTier, ...]:
    return tuple(SimulatedTier(t.name, share=DEFAULT_SHARES[t.name], timeout_s=t.timeout_s, slo_ttft_s=t.timeout_s,
                               max_queue=DEFAULT_MAX_QUEUE[t.name]) for t in TIERS)


def validate_tiers(tiers: tuple[SimulatedTier, ...]) -> None:
    if not tiers:
        raise ValueError("need at least one tier")
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ValueError(f"tier names must be unique: {names}")
    total = sum(t.share for t in tiers)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"tier shares must sum to 1, got {total}")
