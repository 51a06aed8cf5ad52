"""The fleet simulator: conservation, capacity, timeouts, shedding, cold starts and spot."""

from __future__ import annotations

import numpy as np
import pytest

from lab.scale.cost import FleetPlan, SpotMarket
from lab.scale.engine_profile import EngineProfile
from lab.scale.policy import Static
from lab.scale.signals import Action, LoadSignals, ScalingDecision
from lab.scale.simulator import SimConfig, simulate
from lab.scale.tiers import SimulatedTier
from lab.scale.workload import Workload, WorkloadSpec

# One replica: 10 slots, every request holds a slot exactly 2 s (no prefill, 100 tokens x 20 ms).
PROFILE = EngineProfile((1, 10), (1, 10_000), ((0.02, 0.02), (0.02, 0.02)), 1e-9, 10, 100_000)
TIERS = (SimulatedTier("vip", 0.05, 1.0, 1.0, 50), SimulatedTier("realtime", 0.45, 3.0, 3.0, 100),
         SimulatedTier("batch", 0.5, 30.0, 60.0, 200))


def workload(arrivals_per_s: list[int] | np.ndarray) -> Workload:
    counts = np.asarray(arrivals_per_s, dtype=np.int64)
    return Workload(WorkloadSpec(days=len(counts) / 86_400), "test", counts, counts.astype(float), (),
                    np.full(8, 0), np.full(8, 100), "synthetic")


def config(**kw) -> SimConfig:
    base = dict(profile=PROFILE, tiers=TIERS, initial_replicas=1, plan=FleetPlan(startup_s=5, drain_s=5))
    return SimConfig(**{**base, **kw})


def test_underloaded_fleet_serves_everything_within_slo() -> None:
    result = simulate(workload([4] * 100), Static(1), config())  # 4/s x 2 s = 8 of 10 slots
    for tier in result.tiers:
        assert tier.conserved and tier.shed == tier.timed_out == 0
        assert tier.slo_attainment == 1.0
    assert result.total_requests == 400
    assert result.cost.total_gpu_hours == pytest.approx(100 / 3600)


def test_overload_conserves_requests_and_protects_priority() -> None:
    result = simulate(workload([40] * 200), Static(1), config())  # 8x the capacity of 5/s; VIP alone 2/s
    served = sum(t.served for t in result.tiers)
    # The capacity, no more, also while the queues drain after the workload ends.
    assert result.drain_s > 0
    assert served == pytest.approx(5 * (200 + result.drain_s), abs=15)
    for tier in result.tiers:
        assert tier.conserved, tier
    vip, realtime, batch = result.tiers
    assert vip.slo_attainment > 0.99 > realtime.slo_attainment  # VIP first, realtime starved
    assert batch.shed > 0 and realtime.timed_out > 0


def test_no_replicas_means_every_request_times_out_or_is_shed() -> None:
    result = simulate(workload([10] * 50), Static(0), config(initial_replicas=0))
    for tier in result.tiers:
        assert tier.served == 0 and tier.conserved and tier.timed_out + tier.shed == tier.arrived


class StepAt:
    """Scale from 1 to 3 replicas at t=10 (a hand-made policy)."""

    name = "step"

    def reset(self) -> None:
        pass

    def decide(self, s: LoadSignals) -> ScalingDecision:
        if s.time_s == 10:
            return ScalingDecision(s.time_s, 3, Action.SCALE_UP, "step", self.name)
        return ScalingDecision(s.time_s, s.provisioned_replicas, Action.HOLD, "", self.name)


def test_new_replicas_serve_only_after_their_cold_start() -> None:
    result = simulate(workload([1] * 60), StepAt(), config(plan=FleetPlan(startup_s=20)))
    ready, provisioned = result.timeline.ready, result.timeline.provisioned
    assert ready[29] == 1 and ready[30] == 3  # ordered at 10, ready 20 s later
    assert provisioned[10] == 3
    assert [d.desired_replicas for d in result.decisions] == [3]


def test_spot_interruptions_conserve_requests_and_cost_less() -> None:
    spot = SpotMarket(interruptions_per_replica_h=60.0, notice_s=10)  # about one a minute per replica
    plan = FleetPlan(use_spot=True, startup_s=5, drain_s=5)
    load = workload(np.random.default_rng(0).poisson(12, 1200))
    result = simulate(load, Static(3), config(plan=plan, spot=spot, initial_replicas=3))
    assert result.interruptions > 10
    assert all(t.conserved for t in result.tiers)
    on_demand = simulate(load, Static(3), config(initial_replicas=3))
    assert result.cost.total_cost < on_demand.cost.total_cost


def test_decision_lateness_counts_from_the_threshold_crossing() -> None:
    from lab.scale.timeline import Timeline

    timeline = Timeline.empty(10)
    load = np.array([0.5, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5])
    # Decided at 7: the load has been >= 0.85 since 4 -> 3 s late; at 8 it is below again -> 0 (ahead).
    assert timeline.decision_lateness_s([2, 7, 8], load, 0.85) == [1.0, 3.0, 0.0]


def test_tier_queue_sheds_expires_and_admits_oldest_first() -> None:
    from lab.scale.tier_queue import TierQueue

    q = TierQueue(SimulatedTier("realtime", 1.0, timeout_s=2.0, slo_ttft_s=2.0, max_queue=10), [1.0, 0.5, 0.0])
    q.arrive(0, 6)
    q.arrive(1, 6)  # only 4 fit: 2 shed
    assert (q.queued, q.stats.shed) == (10, 2)
    assert q.admit(2, 7) == 7  # 6 that waited 2 s, then 1 that waited 1 s
    assert q.stats.within_slo == pytest.approx(6 * 0.0 + 1 * 0.5)
    q.expire(4)  # the 3 left arrived at 1: waited 3 s > 2 s
    assert (q.queued, q.stats.timed_out) == (0, 3)
    assert q.stats.conserved
