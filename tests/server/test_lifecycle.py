"""Liveness vs readiness, a vanished client frees its KV, and SIGTERM drains before exiting 0.

The load and drain tests share one fresh replica (`fresh_server`, started unready, on the default
process engine core): the first watches it load, the second drains and ends it, leaving no engine
core process behind; each also works alone. The disconnect tests run on both engine cores.
"""
from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.server.conftest import engine_core_pids, launch
from tests.server.test_metrics import scrape, value

LONG = {"prompt": "Count slowly to a thousand:", "temperature": 0, "ignore_eos": True, "max_tokens": 480}
FREE_WITHIN_S = 5.0  # aborting takes a step or two; the 480 tokens of LONG take far longer


def _wait_engine_idle(url: str) -> dict:
    deadline = time.monotonic() + FREE_WITHIN_S
    while True:
        samples = scrape(url)
        busy = [value(samples, n) for n in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                                            "vllm:kv_cache_usage_perc")]
        if busy == [0, 0, 0]:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"engine still busy {FREE_WITHIN_S}s after the client left: running, waiting, kv = {busy}")
        time.sleep(0.1)


@pytest.fixture(params=["process", "thread"])
def any_core_server(request):
    """The shared replica on each engine core: its own process (the default) or a thread."""
    return request.getfixturevalue("server" if request.param == "process" else "thread_server")


def test_streaming_client_that_disconnects_frees_its_kv(any_core_server):
    server = any_core_server
    before = scrape(server.url)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert value(scrape(server.url), "vllm:kv_cache_usage_perc") > 0
        # leaving the block closes the connection mid-stream
    after = _wait_engine_idle(server.url)
    aborted = value(after, "vllm:request_success_total", finished_reason="abort") - value(
        before, "vllm:request_success_total", finished_reason="abort")
    assert aborted == 1


def test_non_streaming_client_that_disconnects_frees_its_kv(any_core_server):
    server = any_core_server
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{server.url}/v1/completions", json=LONG, timeout=httpx.Timeout(60, read=1.5))
    _wait_engine_idle(server.url)


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    srv = launch("--drain-timeout-s", "6", "--max-model-len", "1024", "--num-gpu-blocks", "80",
                 tmp_dir=tmp_path_factory.mktemp("fresh"))
    yield srv
    srv.stop()


def test_health_answers_while_loading_and_ready_only_once_loaded(fresh_server):
    srv = fresh_server
    seen = []  # (health status, ready status) in time order
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not seen or seen[-1][1] != 200):
        try:
            seen.append((httpx.get(f"{srv.url}/health").status_code, httpx.get(f"{srv.url}/ready").status_code))
        except httpx.TransportError:
            time.sleep(0.05)  # not bound yet
    assert seen and seen[-1] == (200, 200)
    assert (200, 503) in seen, f"/ready never said 503 while loading: {seen[:5]}"
    assert httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi"}, timeout=60).status_code == 200


def _stream_in_thread(url: str, body: dict, events: list, first_chunk: threading.Event) -> threading.Thread:
    def run() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[len("data: "):]))
                    first_chunk.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_drains_in_flight_streams_then_exits_zero(fresh_server):
    srv = fresh_server
    srv.wait_ready()
    short, long_ = [], []
    short_started, long_started = threading.Event(), threading.Event()
    threads = [_stream_in_thread(srv.url, {**LONG, "max_tokens": 12}, short, short_started),
               _stream_in_thread(srv.url, {**LONG, "max_tokens": 900}, long_, long_started)]
    unstreamed: list[httpx.Response] = []  # a non-streamed long request, also cut at the drain timeout
    threads.append(threading.Thread(target=lambda: unstreamed.append(httpx.post(
        f"{srv.url}/v1/completions", json={**LONG, "max_tokens": 900}, timeout=120)), daemon=True))
    threads[-1].start()
    assert short_started.wait(30) and long_started.wait(30)
    deadline = time.monotonic() + 10
    while value(scrape(srv.url), "vllm:num_requests_running") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # all three admitted before the signal
    cores = [psutil.Process(pid) for pid in engine_core_pids(srv)]
    assert len(cores) == 1  # the default: the engine core runs in its own process

    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the signal handler schedules the drain on the event loop
    try:
        assert httpx.get(f"{srv.url}/ready").status_code == 503
        refused = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_draining"
    except httpx.ConnectError:
        pass  # already closed: also a refusal

    assert srv.proc.wait(timeout=30) == 0, srv.log()
    for thread in threads:
        thread.join(10)
    # The short stream finished on its own; the long one was aborted at the drain timeout, and
    # says so: vLLM's "abort" finish reason, then an error event (never a normal finish).
    assert short[-1]["choices"][0]["finish_reason"] == "length"
    assert short[-1]["choices"][0]["engine_finish_reason"] == "length"
    assert sum(1 for e in short if e["choices"] and e["choices"][0]["text"]) >= 1
    assert long_[-2]["choices"][0]["finish_reason"] == "abort"
    assert long_[-1]["error"]["code"] == "request_aborted" and "drain" in long_[-1]["error"]["message"]
    assert [e["choices"][0]["finish_reason"] for e in long_[:-2]] == [None] * (len(long_) - 2)
    assert unstreamed[0].status_code == 503 and unstreamed[0].json()["error"]["code"] == "request_aborted"
    psutil.wait_procs(cores, timeout=5)
    assert not any(core.is_running() and core.status() != psutil.STATUS_ZOMBIE for core in cores)
