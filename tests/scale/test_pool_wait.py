"""`wait_until_ready`, the loop both pools wait with: scripted `refresh()` answers, no processes."""

from __future__ import annotations

import pytest

from lab.errors import LabError
from lab.scale.pool import ReplicaInfo, ReplicaState, probe_ready, wait_until_ready


def info(name: str, state: ReplicaState) -> ReplicaInfo:
    return ReplicaInfo(name, f"http://{name}", state, 0.0, 1.0 if state is ReplicaState.READY else None)


def scripted(*answers: list[ReplicaInfo]):
    calls = iter(answers)
    last: list[ReplicaInfo] = []

    def refresh() -> list[ReplicaInfo]:
        nonlocal last
        last = next(calls, last)
        return last
    return refresh


def test_returns_the_ready_urls_once_enough_are_ready():
    refresh = scripted([info("a", ReplicaState.STARTING)],
                       [info("a", ReplicaState.READY), info("b", ReplicaState.STARTING)],
                       [info("a", ReplicaState.READY), info("b", ReplicaState.READY)])
    urls = wait_until_ready(refresh, 2, timeout_s=5, poll_s=0.001, explain_failed=lambda f: "unused")
    assert urls == ["http://a", "http://b"]


def test_a_failed_replica_raises_at_once_with_the_pools_explanation():
    refresh = scripted([info("a", ReplicaState.STARTING)], [info("a", ReplicaState.FAILED)])
    with pytest.raises(LabError, match="a died: see its log"):
        wait_until_ready(refresh, 1, timeout_s=5, poll_s=0.001,
                         explain_failed=lambda failed: f"{failed[0].name} died: see its log")


def test_a_timeout_says_how_many_were_ready_and_where_to_look():
    refresh = scripted([info("a", ReplicaState.READY), info("b", ReplicaState.STARTING)])
    with pytest.raises(LabError, match=r"1 of 2 replicas ready after 0.05 s; logs in /x"):
        wait_until_ready(refresh, 2, timeout_s=0.05, poll_s=0.01, explain_failed=str, where="; logs in /x")


def test_probe_of_a_closed_port_is_false_not_an_error():
    assert probe_ready("http://127.0.0.1:9", timeout_s=0.5) is False
