"""transformers' continuous batching (`lab serve --engine hf-cb`) serves the same model as our engine.

Both replicas serve tiny with 2 layers and seed 0: the hf-cb one runs transformers' own
DeepseekV3ForCausalLM, holding our engine's dummy weights, in its `ContinuousBatchingManager`
(paged attention, float32 on this CPU). So through the official `openai` client, greedy answers
(completions and chat, streamed and not, alone and batched together) are the same text as our
engine's, and a stop string cuts both at the same place. `max_tokens` is honoured; a client that
leaves mid-stream has its request cancelled in the manager (its scheduler runs nothing after);
what the manager cannot do per request is a 400 naming the parameter.
"""
from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.server.conftest import HF_CB_MODEL_FLAGS, MODEL, launch
from tests.server.peer_checks import (GREEDY, PROMPTS, check_greedy_chat, check_greedy_completions,
                                       check_stop_string, client)


@pytest.fixture(scope="module")
def hf_cb_server(tmp_path_factory, request):
    srv = launch(tmp_dir=tmp_path_factory.mktemp("serve-hf-cb"), base_flags=HF_CB_MODEL_FLAGS)
    try:
        request.getfixturevalue("server")  # our engine's replica loads meanwhile: the comparisons need both
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _gauges(srv) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{srv.url}/metrics", timeout=5).text.splitlines():
        for key in ("num_requests_running", "num_requests_waiting"):
            if line.startswith(f"vllm:{key}{{"):
                values[key] = float(line.rsplit(" ", 1)[1])
    return values


def test_greedy_completions_equal_our_engine_streamed_or_not(hf_cb_server, server):
    check_greedy_completions(hf_cb_server, server, MODEL)


def test_greedy_chat_equals_our_engine_streamed_or_not(hf_cb_server, server):
    check_greedy_chat(hf_cb_server, server, MODEL)


def test_requests_batched_together_equal_our_engine_and_each_gets_its_max_tokens(hf_cb_server, server):
    lab = client(server)
    requests = [(PROMPTS[0], 5), (PROMPTS[1], 17), (PROMPTS[2], 9), (PROMPTS[2], 1)]
    expected = [lab.completions.create(model=MODEL, prompt=p, max_tokens=n, **GREEDY).choices[0].text
                for p, n in requests]

    async def concurrently() -> list:  # they join the manager's running batch as they arrive
        cb = openai.AsyncOpenAI(base_url=f"{hf_cb_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        return await asyncio.gather(*(cb.completions.create(model=MODEL, prompt=p, max_tokens=n, **GREEDY)
                                      for p, n in requests))

    answers = asyncio.run(concurrently())
    assert [a.choices[0].text for a in answers] == expected
    assert [a.usage.completion_tokens for a in answers] == [n for _, n in requests]
    assert {a.choices[0].finish_reason for a in answers} == {"length"}


def test_stop_string_cuts_like_our_engine_and_the_manager_lets_the_request_go(hf_cb_server, server):
    check_stop_string(hf_cb_server, server, MODEL)
    deadline = time.monotonic() + 5  # the stop string is ours: the manager's request is cancelled
    while _gauges(hf_cb_server)["num_requests_running"] != 0.0:
        assert time.monotonic() < deadline, "the manager still runs the request a stop string ended"
        time.sleep(0.05)


def test_a_client_that_leaves_mid_stream_has_its_request_cancelled_in_the_manager(hf_cb_server):
    # 480 tokens take the manager many seconds on this CPU; the stream is dropped after a few.
    body = {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 480, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", f"{hf_cb_server.url}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines, chunks = response.iter_lines(), 0
        while chunks < 3:  # next(), not a for loop: leaving the loop would close the iterator, and the stream
            chunks += next(lines).startswith("data: {")
        assert _gauges(hf_cb_server) == {"num_requests_running": 1.0, "num_requests_waiting": 0.0}
    left = time.monotonic()
    while _gauges(hf_cb_server)["num_requests_running"] != 0.0:
        assert time.monotonic() - left < 3.0, "the manager still runs the request of a client that left"
        time.sleep(0.05)
    assert _gauges(hf_cb_server) == {"num_requests_running": 0.0, "num_requests_waiting": 0.0}
    again = client(hf_cb_server).completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=3, **GREEDY)
    assert again.usage.completion_tokens == 3  # and it serves on


@pytest.mark.parametrize(("extra", "param"), [
    ({}, "temperature"),  # OpenAI's default temperature is 1: sampled
    ({"temperature": 0.7}, "temperature"),
    ({"temperature": 0, "logprobs": 2}, "logprobs"),
    ({"temperature": 0, "min_tokens": 2}, "min_tokens"),
])
def test_what_the_manager_cannot_do_per_request_is_a_400_naming_the_parameter(hf_cb_server, extra, param):
    for stream in (False, True):
        body = {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 4, "stream": stream, **extra}
        answer = httpx.post(f"{hf_cb_server.url}/v1/completions", json=body, timeout=30)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param and param in error["message"] and "hf-cb" in error["message"]
    assert _gauges(hf_cb_server)["num_requests_running"] == 0.0
