"""Poison requests: values the engine cannot represent are a 400 naming the field, and never reach the engine.

Before this was enforced, a seed or top_k past 64 bits, or a stop token id past the vocabulary
with min_tokens, passed validation and made the engine step raise, failing every request batched
with it. Here every such body is refused with OpenAI's error shape and the offending `param`; a
flood of them sent while good greedy streams run leaves those streams' tokens exactly as they are
alone, and nothing is counted as a finished request.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lab.chaos.hostile_load import POISON_BODIES, flood_poison

from tests.server.conftest import MAX_MODEL_LEN
from tests.server.test_metrics import scrape, value

CHAT = [{"role": "user", "content": "hi"}]
VOCAB = 129280  # the tiny preset's (DeepSeek's tokenizer) vocabulary
GOOD = {"prompt": "The fastest way to serve", "temperature": 0, "ignore_eos": True, "max_tokens": 24}

POISON = [  # (path, body, the param the 400 must name)
    ("/v1/completions", {"prompt": "hi", "seed": 2**64}, "seed"),
    ("/v1/completions", {"prompt": "hi", "seed": -(2**63) - 1}, "seed"),
    ("/v1/completions", {"prompt": "hi", "top_k": 2**64}, "top_k"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [10**9], "min_tokens": 2}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [VOCAB], "min_tokens": 2}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [-1]}, "stop_token_ids"),
    ("/v1/chat/completions", {"messages": CHAT, "stop_token_ids": [2**70], "min_tokens": 1}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1.0}, "temperature"),
    ("/v1/completions", {"prompt": "hi", "min_tokens": 20, "max_tokens": 4}, "min_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": MAX_MODEL_LEN}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2**70}, "max_tokens"),
    ("/v1/completions", {"prompt": [5, VOCAB]}, "prompt"),
    ("/v1/completions", {"prompt": [5, -3]}, "prompt"),
    ("/v1/completions", {"prompt": [[5, 6], [7, 2**70]]}, "prompt.1"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 21}, "logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "hi", "priority": 2**64}, "priority"),
]
RAW_POISON = [  # JSON that Python parses but the engine cannot use: NaN and Infinity literals
    ("temperature", b'{"prompt": "hi", "temperature": NaN}'),
    ("temperature", b'{"prompt": "hi", "temperature": Infinity}'),
    ("top_p", b'{"prompt": "hi", "top_p": NaN}'),
]


def _error(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("path", "body", "param"), POISON, ids=[f"{p}-{i}" for i, (_, _, p) in enumerate(POISON)])
def test_poison_is_a_400_naming_the_field(server, path, body, param):
    error = _error(httpx.post(f"{server.url}{path}", json=body, timeout=30))
    assert error["param"] == param and error["type"] == "invalid_request_error", error


@pytest.mark.parametrize(("param", "raw"), RAW_POISON, ids=[r.decode() for _, r in RAW_POISON])
def test_non_finite_numbers_are_a_400_naming_the_field(server, param, raw):
    response = httpx.post(f"{server.url}/v1/completions", content=raw,
                          headers={"content-type": "application/json"}, timeout=30)
    assert _error(response)["param"] == param


def _stream_tokens(url: str) -> str:
    parts = []
    with httpx.stream("POST", f"{url}/v1/completions", json={**GOOD, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[len("data: "):])
                assert "error" not in event, event
                parts.extend(c["text"] for c in event["choices"])
    return "".join(parts)


def test_a_poison_flood_leaves_concurrent_streams_untouched(server):
    alone = _stream_tokens(server.url)
    before = scrape(server.url)
    with ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(_stream_tokens, server.url) for _ in range(3)]
        poison = [pool.submit(httpx.post, f"{server.url}{path}", json=body, timeout=60) for path, body, _ in POISON * 2]
        assert [f.result().status_code for f in poison] == [400] * len(poison)
        assert [f.result() for f in streams] == [alone] * 3
    after = scrape(server.url)
    finished = sum(value(after, "vllm:request_success_total", finished_reason=r)
                   - value(before, "vllm:request_success_total", finished_reason=r) for r in ("length", "stop", "abort"))
    assert finished == 3  # the three streams; no poison request ever ran


def test_the_chaos_poison_flood_bodies_are_each_refused_by_a_real_replica(server):
    """`lab.chaos.hostile_load.flood_poison` (the flood-poison drill) must send what a replica refuses, or the
    drill would measure ordinary load instead of poison."""
    before = scrape(server.url)
    result = flood_poison(server.url, api_key="sk-any", duration_s=1.0, threads=2)
    assert result["sent"] >= len(POISON_BODIES) and result["statuses"] == {"400": result["sent"]}
    after = scrape(server.url)
    assert sum(value(after, "vllm:request_success_total", finished_reason=r)
               - value(before, "vllm:request_success_total", finished_reason=r) for r in ("length", "stop", "abort")) == 0
