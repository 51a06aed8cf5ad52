"""The simulated fleet: replicas that start, serve, drain, stop and get interrupted.

Contract: `Fleet.reconcile(target, now_s)` keeps the provisioned count (starting + ready, not
draining) at `target`, as a Kubernetes Deployment does: it starts replicas (ready after
`plan.startup_s`; reserved up to `plan.reserved_replicas`, then spot or on demand) or stops them
(starting ones first, then on-demand, spot, reserved last; a stopped ready replica drains for
`plan.drain_s`). `advance(now_s)` moves replicas through their states and delivers spot
interruptions: a spot replica gets notice at a Poisson time (`SpotMarket`), stops taking requests,
and leaves after the notice; the next `reconcile` replaces it. `replica_seconds` accumulates alive
time per purchase type for the bill (`accrue(dt)`). Requests in flight on a draining replica are
assumed to finish before it leaves (true when drain and notice exceed the longest service time).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from lab.scale.cost import FleetPlan, Purchase, SpotMarket


@dataclass
class Replica:
    id: int
    purchase: Purchase
    started_s: float
    ready_s: float
    leaves_s: float | None = None  # set when draining
    interrupted: bool = False

    def state(self, now_s: float) -> str:
        if self.leaves_s is not None:
            return "draining"
        return "ready" if now_s >= self.ready_s else "starting"


class Fleet:
    def __init__(self, plan: FleetPlan, spot: SpotMarket, seed: int = 0) -> None:
        self.plan, self.spot = plan, spot
        self._rng = np.random.default_rng(seed)
        self._ids = itertools.count()
        self.active: dict[int, Replica] = {}  # starting or ready
        self.draining: dict[int, Replica] = {}
        self._interrupts: list[tuple[float, int]] = []  # (notice time, replica id) heap
        self.replica_seconds = {p: 0.0 for p in Purchase}
        self.interruptions = 0
        self.starts = 0

    # --- counts the simulator and the policies read ---
    def ready_count(self, now_s: float) -> int:
        return sum(1 for r in self.active.values() if r.ready_s <= now_s)

    def starting_count(self, now_s: float) -> int:
        return sum(1 for r in self.active.values() if r.ready_s > now_s)

    @property
    def provisioned(self) -> int:
        return len(self.active)

    @property
    def alive(self) -> int:
        return len(self.active) + len(self.draining)

    # --- changes ---
    def _purchase_for_new(self) -> Purchase:
        reserved = sum(1 for r in self.active.values() if r.purchase is Purchase.RESERVED)
        if reserved < self.plan.reserved_replicas:
            return Purchase.RESERVED
        return Purchase.SPOT if self.plan.use_spot else Purchase.ON_DEMAND

    def _start(self, now_s: float) -> None:
        purchase = self._purchase_for_new()
        replica = Replica(next(self._ids), purchase, now_s, now_s + self.plan.startup_s)
        self.active[replica.id] = replica
        self.starts += 1
        rate_per_s = self.spot.interruptions_per_replica_h / 3600.0
        if purchase is Purchase.SPOT and rate_per_s > 0:
            heapq.heappush(self._interrupts, (now_s + self._rng.exponential(1.0 / rate_per_s), replica.id))

    def _stop(self, replica: Replica, now_s: float, drain_s: float) -> None:
        del self.active[replica.id]
        if replica.ready_s > now_s:
            return  # never served: nothing to drain
        replica.leaves_s = now_s + drain_s
        self.draining[replica.id] = replica

    def reconcile(self, target: int, now_s: float) -> None:
        while len(self.active) < target:
            self._start(now_s)
        if len(self.active) > target:
            # Cancel cold starts first (newest first), then the dearest running capacity.
            order = {Purchase.ON_DEMAND: 0, Purchase.SPOT: 1, Purchase.RESERVED: 2}
            victims = sorted(self.active.values(),
                             key=lambda r: (r.ready_s <= now_s, order[r.purchase], -r.started_s))
            for replica in victims[: len(self.active) - target]:
                self._stop(replica, now_s, self.plan.drain_s)

    def advance(self, now_s: float) -> None:
        while self._interrupts and self._interrupts[0][0] <= now_s:
            _, replica_id = heapq.heappop(self._interrupts)
            replica = self.active.get(replica_id)
            if replica is not None:  # it may have been stopped already
                replica.interrupted = True
                self.interruptions += 1
                self._stop(replica, now_s, self.spot.notice_s)
        for replica_id in [i for i, r in self.draining.items() if r.leaves_s <= now_s]:
            del self.draining[replica_id]

    def accrue(self, dt_s: float) -> None:
        for replica in itertools.chain(self.active.values(), self.draining.values()):
            self.replica_seconds[replica.purchase] += dt_s
