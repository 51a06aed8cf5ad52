"""Passive health (requests that time out or cannot connect) and the probe schedule, as pure state machines."""

from __future__ import annotations

from lab.gateway.canary import CanaryController
from lab.gateway.config import CanaryConfig, HealthConfig
from lab.gateway.health import HealthChecker, record_probe, record_upstream
from tests.gateway.fakes import FakeClock
from tests.gateway.test_health import make_traffic


def test_consecutive_upstream_failures_eject_any_answer_resets_and_only_a_probe_readmits():
    t = make_traffic(("a", "v1", 1.0))
    a = t.replicas["a"]
    assert [record_upstream(t, a, "timeout", 3, i) for i in range(2)] == [None, None]
    assert record_upstream(t, a, None, 3, 2) is None and a.consecutive_upstream_failures == 0  # it answered
    assert [record_upstream(t, a, "refused", 3, i) for i in range(3)] == [None, None, "ejected"]
    assert not a.healthy and "requests in a row" in t.events[-1].message
    assert record_upstream(t, a, None, 3, 9) is None and not a.healthy  # a stray answer does not re-admit
    assert record_probe(t, a, True, "", 3, 10) == "readmitted" and a.consecutive_upstream_failures == 0


def test_probe_and_upstream_failures_are_counted_apart():
    t = make_traffic(("a", "v1", 1.0))
    a = t.replicas["a"]
    record_probe(t, a, False, "probe timeout", 3, 0)
    record_upstream(t, a, "timeout", 3, 1)
    record_probe(t, a, False, "probe timeout", 3, 2)
    assert a.healthy and (a.consecutive_failures, a.consecutive_upstream_failures) == (2, 1)


def test_rounds_keep_their_interval_and_come_three_times_as_often_while_a_replica_is_suspect():
    t = make_traffic(("a", "v1", 1.0), ("b", "v1", 1.0))
    checker = HealthChecker(t, HealthConfig(interval_s=15.0, probe_timeout_s=10.0), None,
                            CanaryController(t, CanaryConfig(), FakeClock()))
    assert checker.next_round_in(round_started=100.0, now=100.5) == 14.5  # a round's own time is not added
    assert checker.next_round_in(round_started=100.0, now=120.0) == 0.0  # it overran: the next starts at once
    record_probe(t, t.replicas["a"], False, "probe timeout", 3, 0)
    assert checker.next_round_in(round_started=100.0, now=101.0) == 4.0  # suspect: every 5 s
    t.replicas["a"].healthy = False  # ejected by probes: back to the normal schedule, probing for re-admission
    assert checker.next_round_in(round_started=100.0, now=101.0) == 14.0
    record_upstream(t, t.replicas["b"], "refused", 1, 0)  # ejected by requests: probed soon, maybe a blip
    assert not t.replicas["b"].healthy and checker.next_round_in(round_started=100.0, now=101.0) == 4.0


def test_a_hung_replica_is_ejected_within_three_intervals_by_the_schedule():
    """The bound of the module docstring, walked round by round: every probe waits out its timeout."""
    interval, timeout = 15.0, 10.0
    t = make_traffic(("a", "v1", 1.0))
    checker = HealthChecker(t, HealthConfig(interval_s=interval, probe_timeout_s=timeout), None,
                            CanaryController(t, CanaryConfig(), FakeClock()))
    started, now = interval, interval  # hung just after the round at 0 passed: the next round starts at 15 s
    while t.replicas["a"].healthy:
        now = started + timeout  # the probe times out
        record_probe(t, t.replicas["a"], False, "timeout", 3, now)
        started = now + checker.next_round_in(started, now)
    assert now <= 3 * interval


def test_request_timeouts_spare_the_last_healthy_replica_but_refusals_do_not():
    t = make_traffic(("a", "v1", 1.0))
    a = t.replicas["a"]
    timeout = "timeout: a gave no first byte within the tier's budget (10 s)"
    assert [record_upstream(t, a, timeout, 3, i) for i in range(4)] == [None] * 4
    assert a.healthy and t.events[-1].kind == "spared"
    assert record_upstream(t, a, "a: ClientConnectorError", 3, 5) == "ejected"  # already 4 failures in a row
