"""The cost model's arithmetic, by hand, and the fleet's bookkeeping behind it."""

from __future__ import annotations

import pytest

from lab.scale.cost import FleetPlan, Prices, Purchase, SpotMarket, bill
from lab.scale.fleet import Fleet

PRICES = Prices(on_demand_per_gpu_h=4.0, reserved_per_gpu_h=2.5, spot_per_gpu_h=1.5)


def test_bill_by_hand() -> None:
    # 2 reserved replicas of 2 GPUs committed for 10 h; on demand ran 3 replica-hours, spot 5.
    plan = FleetPlan(reserved_replicas=2, use_spot=True, gpus_per_replica=2)
    seconds = {Purchase.RESERVED: 1 * 3600.0, Purchase.ON_DEMAND: 3 * 3600.0, Purchase.SPOT: 5 * 3600.0}
    report = bill(seconds, 10 * 3600.0, plan, PRICES)
    assert report.gpu_hours == {"reserved": 40.0, "on_demand": 6.0, "spot": 10.0}  # reserved: committed
    assert report.cost == {"reserved": 100.0, "on_demand": 24.0, "spot": 15.0}
    assert report.total_cost == 139.0
    assert report.used_gpu_hours == 2 * (1 + 3 + 5)


def test_fleet_buys_reserved_first_then_spot_and_bills_alive_time() -> None:
    fleet = Fleet(FleetPlan(reserved_replicas=1, use_spot=True, startup_s=30), SpotMarket(0.0, 120.0))
    fleet.reconcile(3, 0.0)
    assert sorted(r.purchase.value for r in fleet.active.values()) == ["reserved", "spot", "spot"]
    for t in range(100):
        fleet.advance(float(t))
        assert fleet.ready_count(float(t)) == (3 if t >= 30 else 0)
        fleet.accrue(1.0)
    assert fleet.replica_seconds[Purchase.SPOT] == 200.0
    assert fleet.replica_seconds[Purchase.RESERVED] == 100.0


def test_scale_down_cancels_cold_starts_first_then_drains_the_dearest() -> None:
    fleet = Fleet(FleetPlan(reserved_replicas=1, use_spot=False, startup_s=10, drain_s=5), SpotMarket())
    fleet.reconcile(2, 0.0)  # reserved + on demand, ready at 10
    fleet.reconcile(3, 20.0)  # one more, starting until 30
    fleet.reconcile(1, 25.0)
    assert [r.purchase for r in fleet.active.values()] == [Purchase.RESERVED]
    assert len(fleet.draining) == 1  # the ready on-demand one drains; the cold start just stops
    fleet.advance(30.0)
    assert not fleet.draining


def test_spot_interruption_gives_notice_then_replacement_starts() -> None:
    # A huge rate: the spot replica is interrupted within the first second or so.
    fleet = Fleet(FleetPlan(use_spot=True, startup_s=0), SpotMarket(interruptions_per_replica_h=3600 * 50,
                                                                    notice_s=120), seed=1)
    fleet.reconcile(1, 0.0)
    fleet.advance(1.0)
    assert fleet.interruptions >= 1 and fleet.provisioned == 0 and len(fleet.draining) == 1
    fleet.reconcile(1, 1.0)
    assert fleet.provisioned == 1 and fleet.alive == 2  # the old one drains during its notice


def test_prices_reject_negative() -> None:
    with pytest.raises(ValueError):
        Prices(spot_per_gpu_h=-1.0)
