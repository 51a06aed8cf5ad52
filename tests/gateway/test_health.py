"""Ejection after consecutive failed probes, re-admission, rollback decisions, routing."""

from __future__ import annotations

from lab.gateway.canary import CanaryController
from lab.gateway.config import CanaryConfig, ReplicaConfig
from lab.gateway.health import apply_rollback, decide_rollback, record_probe
from lab.gateway.router import LeastOutstandingWork, Reservation, RoundRobin
from lab.gateway.traffic import CanaryRun, ReplicaState, Traffic
from tests.gateway.fakes import FakeClock


def make_traffic(*specs: tuple[str, str, float]) -> Traffic:
    replicas = {n: ReplicaState(ReplicaConfig(f"http://{n}", v, weight=w, name=n)) for n, v, w in specs}
    return Traffic(replicas, specs[0][1], {specs[0][1]: 100.0})


def test_three_consecutive_failures_eject_and_a_success_readmits():
    t = make_traffic(("a", "v1", 1.0))
    a = t.replicas["a"]
    assert record_probe(t, a, False, "boom", 3, 0) is None
    assert record_probe(t, a, True, "", 3, 1) is None  # a success resets the count
    assert [record_probe(t, a, False, "boom", 3, i) for i in range(3)] == [None, None, "ejected"]
    assert not a.healthy and a.last_error == "boom" and t.events[-1].kind == "ejected"
    assert record_probe(t, a, False, "boom", 3, 5) is None  # announced once
    assert record_probe(t, a, True, "", 3, 6) == "readmitted" and a.healthy


def test_dead_canary_is_aborted():
    t = make_traffic(("a", "v1", 1.0), ("b", "v2", 1.0))
    t.canary, t.weights = CanaryRun("v2", 0, 1.0, 0.0), {"v1": 99.0, "v2": 1.0}
    assert decide_rollback(t) is None
    t.replicas["b"].healthy = False
    decision = decide_rollback(t)
    assert (decision.action, decision.from_version, decision.to_version) == ("abort_canary", "v2", "v1")
    apply_rollback(t, decision, CanaryController(t, CanaryConfig(), FakeClock()), 0.0)
    assert t.weights == {"v1": 100.0} and t.canary is None


def test_failed_new_version_rolls_back_to_the_previous():
    t = make_traffic(("a", "v1", 1.0), ("b", "v2", 1.0))
    t.stable, t.previous, t.weights = "v2", "v1", {"v2": 100.0}  # v2 was promoted
    t.replicas["b"].healthy = False
    decision = decide_rollback(t)
    assert (decision.action, decision.to_version) == ("rollback", "v1")
    apply_rollback(t, decision, CanaryController(t, CanaryConfig(), FakeClock()), 0.0)
    assert (t.stable, t.weights, t.events[-1].kind) == ("v1", {"v1": 100.0}, "rollback")


def test_no_rollback_without_a_healthy_previous_version():
    t = make_traffic(("a", "v1", 1.0), ("b", "v2", 1.0))
    t.stable, t.previous = "v2", "v1"
    t.replicas["a"].healthy = t.replicas["b"].healthy = False
    assert decide_rollback(t) is None
    t.previous = None
    t.replicas["a"].healthy = True
    assert decide_rollback(t) is None


def test_least_outstanding_work_per_weight():
    t = make_traffic(("a", "v1", 1.0), ("b", "v1", 2.0), ("c", "v1", 1.0))
    a, b, c = (t.replicas[n] for n in "abc")
    router = LeastOutstandingWork()
    held = [Reservation(a, 100), Reservation(b, 150), Reservation(c, 90)]
    assert router.pick([a, b, c]) is b  # 150 / weight 2 = 75 < 90 < 100
    held[2].close()
    assert router.pick([a, b, c]) is c and c.outstanding_requests == 0
    held[2].close()  # idempotent
    assert c.outstanding_tokens == 0
    assert router.pick([]) is None


def test_round_robin_cycles():
    t = make_traffic(("a", "v1", 1.0), ("b", "v1", 1.0))
    router = RoundRobin()
    assert [router.pick(list(t.replicas.values())).name for _ in range(4)] == ["a", "b", "a", "b"]


def test_health_loop_survives_a_failing_round():
    import asyncio

    from lab.gateway.config import HealthConfig
    from lab.gateway.health import HealthChecker

    async def scenario() -> int:
        t = make_traffic(("a", "v1", 1.0))
        checker = HealthChecker(t, HealthConfig(interval_s=0.001), None, CanaryController(t, CanaryConfig(), FakeClock()))
        rounds = 0

        async def flaky() -> None:
            nonlocal rounds
            rounds += 1
            if rounds == 1:
                raise RuntimeError("bug in round 1")

        checker.check_all = flaky
        task = asyncio.create_task(checker.run())
        while rounds < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        return rounds

    assert asyncio.run(scenario()) >= 3


def test_timeouts_alone_never_eject_the_last_healthy_replica():
    t = make_traffic(("a", "v1", 1.0), ("b", "v1", 1.0))
    a, b = t.replicas["a"], t.replicas["b"]
    b.healthy = False  # the other one is down (killed, restarting)
    assert [record_probe(t, a, False, "ReadTimeout", 3, i, timed_out=True) for i in range(4)] == [None] * 4
    assert a.healthy and t.events[-1].kind == "spared"
    # An error answer (or a refusal) still ejects it, here at once: the failures in a row are already past 3.
    assert record_probe(t, a, False, "HTTP 500", 3, 5) == "ejected" and not a.healthy


def test_a_timing_out_replica_is_ejected_while_another_one_serves():
    t = make_traffic(("a", "v1", 1.0), ("b", "v1", 1.0))
    a = t.replicas["a"]
    assert [record_probe(t, a, False, "ReadTimeout", 3, i, timed_out=True) for i in range(3)] == [None, None, "ejected"]
