"""The cost model: prices per GPU-hour by purchase type, spot interruptions, cold start.

Contract: `Prices` holds the price of one GPU-hour bought reserved (committed for the whole period,
paid whether used or not), on demand, or as spot (cheap, interruptible). `SpotMarket` is how often a
spot replica is taken back (interruptions per replica-hour, a Poisson rate) and how much notice it
gets. `FleetPlan` says how the fleet buys capacity: `reserved_replicas` bought up front, everything
above them on spot (`use_spot`) or on demand. `bill(...)` turns replica-seconds by purchase type
into a `CostReport` (GPU-hours and cost per type and in total). The default prices are
illustrative (a reserved commitment ~35 % and spot ~60 % below on demand); pass your provider's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Purchase(str, Enum):
    RESERVED = "reserved"
    ON_DEMAND = "on_demand"
    SPOT = "spot"


@dataclass(frozen=True)
class Prices:
    on_demand_per_gpu_h: float = 4.00
    reserved_per_gpu_h: float = 2.60
    spot_per_gpu_h: float = 1.60

    def __post_init__(self) -> None:
        if min(self.on_demand_per_gpu_h, self.reserved_per_gpu_h, self.spot_per_gpu_h) < 0:
            raise ValueError("prices must be >= 0")

    def per_gpu_h(self, purchase: Purchase) -> float:
        return {Purchase.RESERVED: self.reserved_per_gpu_h, Purchase.ON_DEMAND: self.on_demand_per_gpu_h,
                Purchase.SPOT: self.spot_per_gpu_h}[purchase]


@dataclass(frozen=True)
class SpotMarket:
    interruptions_per_replica_h: float = 0.05  # Poisson rate of take-backs while a spot replica lives
    notice_s: float = 120.0  # AWS gives 120 s, GCP 30 s: the replica drains, its replacement starts

    def __post_init__(self) -> None:
        if self.interruptions_per_replica_h < 0 or self.notice_s < 0:
            raise ValueError("interruption rate and notice must be >= 0")


@dataclass(frozen=True)
class FleetPlan:
    reserved_replicas: int = 0
    use_spot: bool = False  # above the reserved base: spot if True, else on demand
    gpus_per_replica: int = 1
    startup_s: float = 60.0  # cold start: process start, weight load, warm-up, until /ready
    drain_s: float = 30.0  # a stopped replica finishes its in-flight requests, then goes

    def __post_init__(self) -> None:
        if self.reserved_replicas < 0 or self.gpus_per_replica < 1 or self.startup_s < 0 or self.drain_s < 0:
            raise ValueError("need reserved_replicas >= 0, gpus_per_replica >= 1, startup_s and drain_s >= 0")

    @property
    def label(self) -> str:
        base = f"{self.reserved_replicas} reserved + " if self.reserved_replicas else ""
        return base + ("spot" if self.use_spot else "on demand")


@dataclass(frozen=True)
class CostReport:
    period_h: float
    gpu_hours: dict[str, float]  # by purchase type (reserved: the committed hours)
    cost: dict[str, float]  # by purchase type
    used_gpu_hours: float  # GPU-hours replicas were alive (starting, ready or draining)

    @property
    def total_gpu_hours(self) -> float:
        return sum(self.gpu_hours.values())

    @property
    def total_cost(self) -> float:
        return sum(self.cost.values())


def bill(replica_seconds: dict[Purchase, float], period_s: float, plan: FleetPlan, prices: Prices) -> CostReport:
    """Cost of a fleet that lived `replica_seconds` per purchase type over `period_s`."""
    gpu = plan.gpus_per_replica
    used_h = {p: replica_seconds.get(p, 0.0) * gpu / 3600.0 for p in Purchase}
    # Reserved capacity is paid for the whole period whether it ran or not.
    committed_h = plan.reserved_replicas * gpu * period_s / 3600.0
    hours = {Purchase.RESERVED: max(committed_h, used_h[Purchase.RESERVED]),
             Purchase.ON_DEMAND: used_h[Purchase.ON_DEMAND], Purchase.SPOT: used_h[Purchase.SPOT]}
    return CostReport(
        period_h=period_s / 3600.0,
        gpu_hours={p.value: h for p, h in hours.items()},
        cost={p.value: h * prices.per_gpu_h(p) for p, h in hours.items()},
        used_gpu_hours=sum(used_h.values()),
    )
