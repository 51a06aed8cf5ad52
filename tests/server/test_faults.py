"""`lab serve --enable-fault-injection`: /admin/faults arms real faults in the engine core of a real replica.

One replica (the session's `fault_server`: tiny, 2 layers, CPU, `--engine-iteration-timeout-s 2`, also the
hung-core tests' replica) serves the module; every test clears its faults when it ends. Each fault has the effect it claims: oom raise fails the requests of its step with an
explicit error and the next request succeeds; a hung step turns /health 503 `engine_unresponsive` within
the iteration timeout and clear brings it back to 200 (the hung request then completes); a slow step adds
about its delay to TTFT; NaN weights fail requests with an error naming non-finite logits, turn /health
503 `engine_degraded`, and clear restores the very tokens served before. Without the flag the routes do
not exist; a wrong admin key is refused.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server.conftest import ENGINE_ITERATION_TIMEOUT_S, FAULT_ADMIN_KEY

ADMIN_KEY = FAULT_ADMIN_KEY
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TIMEOUT_S = ENGINE_ITERATION_TIMEOUT_S  # --engine-iteration-timeout-s
DETECT_WITHIN_S = 15.0  # the timeout, plus a heartbeat, plus slack for two shared cores
GREEDY = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0.0, "ignore_eos": True}


@pytest.fixture(scope="module")
def replica(fault_server):
    return fault_server


@pytest.fixture
def url(replica):
    yield replica.url
    cleared = httpx.delete(f"{replica.url}/admin/faults", headers=ADMIN, timeout=30)
    assert cleared.status_code == 200 and cleared.json()["armed"] == [], cleared.text


def arm(url: str, **body) -> dict:
    answer = httpx.post(f"{url}/admin/faults", headers=ADMIN, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def complete(url: str, body: dict = GREEDY, timeout_s: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json=body, timeout=timeout_s)


def wait_for(url: str, status: int, within_s: float) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        answer = httpx.get(url, timeout=10)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_without_the_flag_the_fault_routes_do_not_exist(server):
    for method in ("GET", "POST", "DELETE"):
        answer = httpx.request(method, f"{server.url}/admin/faults", headers=ADMIN, json={"kind": "oom"}, timeout=10)
        assert answer.status_code == 404, (method, answer.text)


def test_a_missing_or_wrong_admin_key_is_refused(url):
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": ADMIN_KEY}):
        answer = httpx.post(f"{url}/admin/faults", headers=headers, json={"kind": "slow_step", "delay_ms": 5000})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_admin_key"
    assert httpx.get(f"{url}/admin/faults", headers=ADMIN).json()["armed"] == []  # nothing was armed


@pytest.mark.parametrize("body, param", [
    ({"kind": "meteor"}, "kind"), ({"kind": "oom", "steps": 0}, "steps"),
    ({"kind": "oom", "steps": 1, "duration_s": 1}, "steps"), ({"kind": "slow_step"}, "delay_ms"),
    ({"kind": "hang_step", "duration_s": -1}, "duration_s"), ({"kind": "nan_weights", "colour": "red"}, "colour"),
])
def test_a_bad_fault_body_is_a_400_naming_the_field(url, body, param):
    answer = httpx.post(f"{url}/admin/faults", headers=ADMIN, json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text


def test_what_the_engine_cannot_do_is_refused_saying_why(url):
    for body, words in (({"kind": "oom", "mode": "allocate"}, "needs a CUDA device"),
                        ({"kind": "nan_weights", "weight": "model.nope"}, "no weight named 'model.nope'")):
        answer = httpx.post(f"{url}/admin/faults", headers=ADMIN, json=body)
        assert answer.status_code == 400 and words in answer.json()["error"]["message"], answer.text


def test_oom_raise_fails_the_requests_of_its_step_and_later_ones_succeed(url):
    armed = arm(url, kind="oom", mode="raise", steps=1)
    record = armed["record"]
    assert record["kind"] == "oom" and record["mode"] == "raise" and record["device"] == "cpu"
    assert record["armed_at_wall_s"] > 0 and record["armed_at_monotonic_s"] > 0
    failed = complete(url)
    assert failed.status_code == 500, failed.text
    assert "OutOfMemoryError" in failed.json()["error"]["message"]
    served = complete(url)
    assert served.status_code == 200 and served.json()["usage"]["completion_tokens"] == GREEDY["max_tokens"]
    state = httpx.get(f"{url}/admin/faults", headers=ADMIN).json()
    assert state["armed"] == [] and state["recent"][-1]["steps_hit"] == 1
    assert httpx.get(f"{url}/health").status_code == 200  # an OOM is not a reason to eject the replica


def test_a_hung_step_turns_health_503_and_clear_brings_it_back(url):
    arm(url, kind="hang_step", duration_s=120)
    hung: dict[str, httpx.Response] = {}
    caller = threading.Thread(target=lambda: hung.update(answer=complete(url, timeout_s=120)), daemon=True)
    started = time.monotonic()
    caller.start()
    health = wait_for(f"{url}/health", 503, DETECT_WITHIN_S)
    assert health.status_code == 503 and health.json()["error"]["code"] == "engine_unresponsive", health.text
    assert time.monotonic() - started >= TIMEOUT_S - 1.0  # not before the limit
    cleared = httpx.delete(f"{url}/admin/faults", headers=ADMIN, timeout=30)
    assert cleared.status_code == 200
    assert wait_for(f"{url}/health", 200, DETECT_WITHIN_S).status_code == 200
    caller.join(60)
    assert hung["answer"].status_code == 200  # the held request went on after the clear
    ended = httpx.get(f"{url}/admin/faults", headers=ADMIN).json()["recent"][-1]
    assert ended["kind"] == "hang_step" and ended["ended_by"] == "clear" and ended["hung_s"] >= TIMEOUT_S - 1.0


def _ttft_s(url: str) -> float:
    started = time.monotonic()
    with httpx.stream("POST", f"{url}/v1/completions", json={**GREEDY, "max_tokens": 2, "stream": True},
                      timeout=60) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                return time.monotonic() - started
    raise AssertionError("no token streamed")


def test_a_slow_step_adds_about_its_delay_to_ttft(url):
    delay_s = 0.5
    plain = min(_ttft_s(url) for _ in range(3))  # min: a shared machine only ever adds time
    arm(url, kind="slow_step", delay_ms=delay_s * 1000)
    slow = [_ttft_s(url) for _ in range(3)]
    assert all(ttft >= delay_s for ttft in slow), slow  # every request pays it
    assert 0.8 * delay_s <= min(slow) - plain <= delay_s + 1.5, (plain, slow)


def test_nan_weights_fail_requests_degrade_health_and_clear_restores_the_same_tokens(url):
    before = complete(url).json()["choices"][0]["text"]
    record = arm(url, kind="nan_weights")["record"]
    assert record["weight"] == "model.layers.0.self_attn.o_proj.weight" and record["device"] == "cpu"
    failed = complete(url)
    assert failed.status_code == 500 and "non-finite logits" in failed.json()["error"]["message"], failed.text
    for probe in ("/health", "/ready"):
        answer = httpx.get(f"{url}{probe}")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_degraded", answer.text
        assert "non-finite logits" in answer.json()["error"]["message"]
    httpx.delete(f"{url}/admin/faults", headers=ADMIN, timeout=30).raise_for_status()
    assert httpx.get(f"{url}/health").status_code == 200
    after = complete(url)
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == before
