"""The engine core in its own process (`--engine-core process`, the default) against the thread core.

Live replicas: greedy answers equal the thread core's (the reference), streamed or not, one at a
time or together; the core's refusals are 400s; a core killed under load fails the live stream
and every later request with an error naming its exit, instead of hanging. Without processes:
outputs that queue up for a slow consumer coalesce into one delta, and failures map to the
`ServingBackend` errors.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lab.engine.core_messages import AddRequest, CoreOutput, CoreStats, RequestFailure, StepBatch
from lab.engine.sampling_params import SamplingParams
from lab.server.backend import BackendError, RequestRefused
from lab.server.core_backend import EngineCoreBackend
from tests.server.conftest import engine_core_pids, launch

PROMPTS = ["The fastest way to serve a large language model is", "One two three four five six"]
CHAT = [{"role": "user", "content": "Name three GPUs."}]
GREEDY = {"temperature": 0, "ignore_eos": True, "max_tokens": 20}
VOCAB = 1000  # the fake core's vocabulary


def _answer(url: str, path: str, body: dict) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of one request, streamed or not."""
    stream = body.get("stream", False)
    if stream:
        body = {**body, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=url, timeout=60) as http:
        if not stream:
            out = http.post(path, json=body).json()
            choice = out["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            return text, out["usage"]["completion_tokens"], choice["finish_reason"]
        parts, finish, usage = [], None, None
        with http.stream("POST", path, json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: "):])
                usage = event.get("usage") or usage
                for choice in event["choices"]:
                    parts.append(choice["delta"].get("content") or "" if "delta" in choice else choice["text"])
                    finish = choice["finish_reason"] or finish
        return "".join(parts), usage["completion_tokens"], finish


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_greedy_answers_equal_the_thread_core(server, thread_server, path, stream):
    if path == "/v1/completions":
        bodies = [{"prompt": p, **GREEDY, "stream": stream} for p in PROMPTS]
    else:
        bodies = [{"messages": CHAT, **GREEDY, "stream": stream}]
    for body in bodies:
        by_process = _answer(server.url, path, body)
        assert by_process == _answer(thread_server.url, path, body)
        assert by_process[1:] == (GREEDY["max_tokens"], "length")


def test_concurrent_greedy_answers_equal_the_thread_core(server, thread_server):
    # Batched together (and streamed, so outputs may coalesce): each answer is still its own.
    bodies = [{"prompt": p, **GREEDY, "max_tokens": 32, "stream": i % 2 == 0} for i, p in enumerate(PROMPTS * 2)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: _answer(server.url, "/v1/completions", b), bodies))
    alone = [_answer(thread_server.url, "/v1/completions", b) for b in bodies[: len(PROMPTS)]]
    assert together == alone * 2


def test_prompt_the_core_refuses_is_a_400_and_it_keeps_serving(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/v1/completions", json={"prompt": [5, 10**7], "max_tokens": 2})
        assert response.status_code == 400, response.text
        assert "vocabulary" in response.json()["error"]["message"]
        ok = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_killed_core_fails_live_and_new_requests_naming_its_exit(tmp_path):
    srv = launch(tmp_dir=tmp_path)
    try:
        srv.wait_ready()
        [core] = engine_core_pids(srv)
        events = []
        body = {"prompt": "Count slowly:", "temperature": 0, "ignore_eos": True, "max_tokens": 480, "stream": True}
        with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[len("data: "):]))
                    if len(events) == 1:
                        os.kill(core, signal.SIGKILL)
        error = events[-1]["error"]  # the stream ended (no hang) with an in-band error event
        assert error["code"] == "engine_error" and "SIGKILL" in error["message"], error
        later = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
        assert later.status_code == 500 and later.json()["error"]["code"] == "engine_error"
        assert "engine core process was killed by SIGKILL" in later.json()["error"]["message"]
        for probe in ("/health", "/ready"):  # an orchestrator sees the replica is gone and restarts it
            answer = httpx.get(f"{srv.url}{probe}", timeout=10)
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_dead", (probe, answer.text)
            assert "SIGKILL" in answer.json()["error"]["message"]
    finally:
        srv.stop()


# ---- the backend alone: a fake core, no processes --------------------------------------------------------
class _FakeClient:
    def __init__(self) -> None:
        self.sent: list = []
        self.pid = None

    def listen(self, on_batch, on_exit) -> None:
        self.on_batch, self.on_exit = on_batch, on_exit

    def send(self, command) -> None:
        self.sent.append(command)


def _out(request_id: str, text: str, token: int, n: int, finish: str | None = None) -> CoreOutput:
    return CoreOutput(request_id, text, [token], n, finish, 0.01, 0)


def _batch(*outputs: CoreOutput, failures: tuple[RequestFailure, ...] = ()) -> StepBatch:
    return StepBatch(list(outputs), list(failures), CoreStats(1, 0, 0.5))


def _run_with(deliver) -> tuple[list, BaseException | None, _FakeClient]:
    """Start one request on a fake core, let `deliver(backend, client)` answer it, collect its deltas."""
    client = _FakeClient()
    backend = EngineCoreBackend(client, 64, tokenizer=None, model_name="m", vocab_size=VOCAB)

    async def main():
        deltas, error = [], None
        gen = backend.generate([1, 2, 3], SamplingParams(max_tokens=3), "r1")
        first = asyncio.ensure_future(anext(gen))
        await asyncio.sleep(0)  # the request is sent; its outputs arrive before the consumer wakes
        assert isinstance(client.sent[0], AddRequest) and client.sent[0].request_id == "r1"
        deliver(backend, client)
        try:
            deltas.append(await first)
            async for delta in gen:
                deltas.append(delta)
        except (BackendError, RequestRefused) as exc:
            error = exc
        return deltas, error

    deltas, error = asyncio.run(main())
    return deltas, error, client


def test_outputs_that_queue_up_coalesce_into_one_delta():
    def deliver(backend, _):
        backend._dispatch(_batch(_out("r1", "a", 7, 1)))
        backend._dispatch(_batch(_out("r1", "b", 8, 2)))
        backend._dispatch(_batch(_out("r1", "c", 9, 3, finish="length")))

    deltas, error, _ = _run_with(deliver)
    assert error is None and len(deltas) == 1
    assert (deltas[0].text, deltas[0].token_ids, deltas[0].num_output_tokens) == ("abc", (7, 8, 9), 3)
    assert deltas[0].finish_reason == "length" and deltas[0].queue_time_s == 0.01


def test_refusal_before_any_output_is_request_refused():
    deltas, error, client = _run_with(
        lambda backend, _: backend._dispatch(_batch(failures=(RequestFailure("r1", True, "too long"),))))
    assert deltas == [] and isinstance(error, RequestRefused) and str(error) == "too long"
    assert len(client.sent) == 1  # nothing to abort: the core never admitted it


def test_step_failure_after_output_is_backend_error():
    deltas, error, _ = _run_with(lambda backend, _: backend._dispatch(
        _batch(_out("r1", "a", 7, 1), failures=(RequestFailure("r1", False, "engine step failed: boom"),))))
    assert [d.text for d in deltas] == ["a"]
    assert isinstance(error, BackendError) and "boom" in str(error)


def test_core_exit_fails_live_and_later_requests():
    backends = []

    def deliver(backend, _):
        backends.append(backend)
        backend._on_exit("the engine core process exited with code 3", False)
        backend._fail_all()  # what the reader thread schedules on the loop

    deltas, error, _ = _run_with(deliver)
    assert deltas == [] and isinstance(error, BackendError) and "code 3" in str(error)
    assert backends[0].dead_reason == "the engine core process exited with code 3"  # /health and /ready: 503
    with pytest.raises(BackendError, match="code 3"):
        asyncio.run(anext(backends[0].generate([1], SamplingParams(), "r2")))


def test_a_live_core_is_not_dead():
    assert EngineCoreBackend(_FakeClient(), 64, tokenizer=None, model_name="m", vocab_size=VOCAB).dead_reason is None


def test_stats_are_the_latest_batch_snapshot():
    client = _FakeClient()
    backend = EngineCoreBackend(client, 64, tokenizer=None, model_name="m", vocab_size=VOCAB)
    assert backend.stats().num_requests_running == 0
    client.on_batch(StepBatch([], [], CoreStats(3, 2, 0.25)))
    stats = backend.stats()
    assert (stats.num_requests_running, stats.num_requests_waiting, stats.kv_cache_usage) == (3, 2, 0.25)
