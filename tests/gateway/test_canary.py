"""Canary math and decisions: p99, abort on errors or latency, ramp 1 -> 5 -> 25 -> 50 -> 100."""

from __future__ import annotations

from lab.gateway.canary import CanaryController, VersionStats, judge, next_percent
from lab.gateway.config import CanaryConfig, ReplicaConfig
from lab.gateway.traffic import ReplicaState, Traffic
from tests.gateway.fakes import FakeClock

CONFIG = CanaryConfig(min_requests=10, window_s=60.0, error_rate_margin=0.05, latency_margin=0.5)


def stats(n: int, errors: int = 0, latency_s: float = 0.1) -> VersionStats:
    s = VersionStats()
    for i in range(n):
        s.record(ok=i >= errors, latency_s=latency_s)
    return s


def test_p99_is_the_nearest_rank():
    s = VersionStats()
    for ms in range(1, 201):  # 1..200 ms: rank ceil(0.99 * 200) = 198
        s.record(True, ms / 1000)
    assert s.p99_s() == 0.198
    assert stats(10, errors=2).error_rate == 0.2


def test_judge_waits_for_enough_requests_and_the_window():
    assert judge(stats(9, errors=9), stats(100), CONFIG, window_elapsed=True).action == "wait"
    assert judge(stats(10), stats(100), CONFIG, window_elapsed=False).action == "wait"
    assert judge(stats(10), stats(100), CONFIG, window_elapsed=True).action == "ramp"


def test_judge_aborts_on_error_rate_over_the_margin():
    # stable 2%, margin 5 points: 7% is the edge, 1 error in 10 (10%) is over it.
    assert judge(stats(10, errors=1), stats(100, errors=2), CONFIG, window_elapsed=False).action == "abort"
    assert judge(stats(100, errors=7), stats(100, errors=2), CONFIG, window_elapsed=True).action == "ramp"


def test_judge_aborts_on_latency_over_the_margin():
    slow = judge(stats(10, latency_s=0.16), stats(100, latency_s=0.1), CONFIG, window_elapsed=True)
    assert slow.action == "abort" and "p99" in slow.reason
    assert judge(stats(10, latency_s=0.149), stats(100, latency_s=0.1), CONFIG, window_elapsed=True).action == "ramp"


def test_next_percent_steps():
    steps = (1.0, 5.0, 25.0, 50.0, 100.0)
    assert [next_percent(p, steps) for p in (1, 5, 25, 50, 3)] == [5, 25, 50, 100, 5]


def traffic() -> Traffic:
    replicas = {n: ReplicaState(ReplicaConfig(f"http://{n}", v, name=n)) for n, v in (("a", "v1"), ("b", "v2"))}
    return Traffic(replicas, "v1", {"v1": 100.0})


def test_controller_ramps_through_the_steps_and_promotes():
    clock, t = FakeClock(), traffic()
    canary = CanaryController(t, CONFIG, clock)
    canary.start("v2")
    assert t.weights == {"v1": 99.0, "v2": 1.0}
    seen = []
    for _ in range(4):
        for version in ("v1", "v2"):
            for _ in range(10):
                canary.record(version, True, 0.1)
        clock.advance(60)
        assert canary.tick().action == "ramp"
        seen.append(dict(t.weights))
    assert [w.get("v2") for w in seen] == [5.0, 25.0, 50.0, 100.0]
    assert (t.stable, t.previous, t.canary) == ("v2", "v1", None)
    assert [e.kind for e in t.events] == ["canary_start", "canary_ramp", "canary_ramp", "canary_ramp", "canary_promote"]


def test_controller_aborts_a_bad_canary_back_to_stable():
    clock, t = FakeClock(), traffic()
    canary = CanaryController(t, CONFIG, clock)
    canary.start("v2", percent=5)
    for _ in range(10):
        canary.record("v2", False, 0.0)
        canary.record("v1", True, 0.1)
    assert canary.tick().action == "abort"  # before the window ends: errors do not wait
    assert t.weights == {"v1": 100.0} and t.canary is None and t.stable == "v1"


def test_choose_version_follows_weights_and_skips_unhealthy_versions():
    t = traffic()
    t.weights = {"v1": 90.0, "v2": 10.0}
    picks = [t.choose_version(i / 100) for i in range(100)]
    assert picks.count("v2") == 10
    t.replicas["b"].healthy = False
    assert {t.choose_version(i / 100) for i in range(100)} == {"v1"}
