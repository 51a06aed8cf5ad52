"""The transformers baseline (`lab serve --engine hf`) serves the same model as our engine.

Both replicas serve tiny with 2 layers and seed 0: the hf one builds transformers' own
DeepseekV3ForCausalLM and copies our engine's dummy weights into it by HF name. So through the
official `openai` client, greedy answers (completions and chat, streamed and not) must be the
same text as our engine's, and so must a seeded sampled answer (both draw with the engine's
sampler), also when the baseline runs requests together in a left-padded static batch (it serves
with --hf-batch-size 2). It reports the vLLM gauges through the same server code while requests
queue behind a batch.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
import openai
import pytest

from tests.server.conftest import HF_BATCH_SIZE, MODEL
from tests.server.peer_checks import (GREEDY, MAX_TOKENS, PROMPTS, check_greedy_chat,
                                       check_greedy_completions, check_stop_string, client)

SEEDED = {"temperature": 0.8, "top_p": 0.9, "seed": 7, "extra_body": {"ignore_eos": True}}


def test_greedy_completions_equal_our_engine_streamed_or_not(hf_server, server):
    check_greedy_completions(hf_server, server, MODEL)


def test_greedy_chat_equals_our_engine_streamed_or_not(hf_server, server):
    check_greedy_chat(hf_server, server, MODEL)


def test_stop_string_cuts_like_our_engine(hf_server, server):
    check_stop_string(hf_server, server, MODEL)


def test_batched_greedy_and_seeded_answers_equal_our_engine(hf_server, server):
    lab = client(server)
    requests = [(PROMPTS[0], GREEDY), (PROMPTS[1], SEEDED), (PROMPTS[2], GREEDY), (PROMPTS[2], SEEDED)]
    expected = [lab.completions.create(model=MODEL, prompt=p, max_tokens=MAX_TOKENS, **kw).choices[0].text
                for p, kw in requests]

    async def concurrently() -> list[str]:  # prompts of different lengths share left-padded batches
        hf = openai.AsyncOpenAI(base_url=f"{hf_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        outs = await asyncio.gather(*(hf.completions.create(model=MODEL, prompt=p, max_tokens=MAX_TOKENS, **kw)
                                      for p, kw in requests))
        return [o.choices[0].text for o in outs]

    assert asyncio.run(concurrently()) == expected
    assert expected[1] != expected[0]  # the seeded answer really sampled


def test_queued_requests_show_in_the_vllm_gauges(hf_server):
    # Static batches of 2: while a batch runs, later requests wait; /metrics must say so.
    seen = {"running": 0.0, "waiting": 0.0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for line in httpx.get(f"{hf_server.url}/metrics", timeout=5).text.splitlines():
                for key in seen:
                    if line.startswith(f"vllm:num_requests_{key}{{"):
                        seen[key] = max(seen[key], float(line.rsplit(" ", 1)[1]))
            time.sleep(0.02)

    async def burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=hf_server.url, timeout=60) as http:
            body = {"prompt": PROMPTS[1], "max_tokens": 16, "temperature": 0.0, "ignore_eos": True}
            answers = await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(5)))
        return [a.json() for a in answers]

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        answers = asyncio.run(burst())
    finally:
        done.set()
        poller.join()
    assert [a["usage"]["completion_tokens"] for a in answers] == [16] * 5
    assert len({a["choices"][0]["text"] for a in answers}) == 1  # same prompt, greedy: same answer
    assert 1.0 <= seen["running"] <= HF_BATCH_SIZE and seen["waiting"] >= 1.0


def _timed_stream(url: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    """(E2E, arrival time of every SSE chunk that carries tokens), both from just before the POST."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True}
    arrivals = []
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"choices":[{' in line.replace(" ", ""):
                arrivals.append(time.perf_counter() - start)
    return time.perf_counter() - start, arrivals


def test_tokens_stream_as_generate_produces_them_alone_and_in_a_static_batch(hf_server):
    # TTFT against the baseline must be the first token's time, not the whole generate() call:
    # each row's tokens leave the server step by step, also when two requests share one batch.
    max_tokens = 48

    def one(prompt: str) -> tuple[float, list[float]]:
        return _timed_stream(hf_server.url, prompt, max_tokens)

    e2e_s, arrivals = one(PROMPTS[0])
    assert arrivals[0] < 0.5 * e2e_s  # alone: the first token long before the end
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # Together (one batch, or the second queued behind the first: its TTFT then includes the wait).
        batched = list(pool.map(one, PROMPTS[:2]))
    for _, arrivals in ((e2e_s, arrivals), *batched):
        assert len(arrivals) >= max_tokens * 3 // 4  # about one chunk per token (a partial character waits)
        streamed_s = arrivals[-1] - arrivals[0]
        assert arrivals[-1] - arrivals[len(arrivals) // 2] > 0.25 * streamed_s  # spread out, not a burst at the end
