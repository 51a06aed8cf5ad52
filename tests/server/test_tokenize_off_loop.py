"""A huge prompt is tokenized off the event loop: other streams keep their time to first token meanwhile.

Tokenizing ~2.5 MB of text takes the tokenizer several seconds of CPU (its single-text call holds
the GIL throughout). Before, that ran on the replica's event loop and every stream stalled for as
long. Now small streamed requests sent while the huge one is being tokenized get their first
token within `SMALL_TTFT_BOUND_S` (generous: two shared cores), and the huge request, still in
flight after them, ends with the usual 400 `context_length_exceeded` naming its token count.
"""
from __future__ import annotations

import threading
import time

import httpx

HUGE_PROMPT = "hello world, this is a long prompt. " * 70_000  # ~2.5 MB (~630k tokens), under the 8 MiB limit
SMALL = {"prompt": "hi", "max_tokens": 2, "temperature": 0, "ignore_eos": True, "stream": True}
SMALL_TTFT_BOUND_S = 2.5  # the tiny model answers in ~0.1 s; the huge prompt takes several seconds to tokenize
NUM_SMALL = 3


def _ttft_s(url: str) -> float:
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=SMALL, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - start
    raise AssertionError("no chunk came back")


def test_small_requests_keep_their_ttft_while_a_huge_prompt_is_tokenized(server):
    _ttft_s(server.url)  # warm
    huge: dict = {}

    def send_huge() -> None:
        response = httpx.post(f"{server.url}/v1/completions", json={"prompt": HUGE_PROMPT, "max_tokens": 1},
                              timeout=120)
        huge["done_s"], huge["response"] = time.perf_counter(), response

    sender = threading.Thread(target=send_huge, daemon=True)
    sender.start()
    time.sleep(1.0)  # the body is uploaded and parsed: tokenizing has begun
    ttfts = [_ttft_s(server.url) for _ in range(NUM_SMALL)]
    smalls_done_s = time.perf_counter()
    sender.join(120)
    assert max(ttfts) < SMALL_TTFT_BOUND_S, ttfts
    assert huge["done_s"] > smalls_done_s, "the huge prompt finished first: the small requests did not overlap it"
    error = huge["response"].json()["error"]
    assert huge["response"].status_code == 400 and error["code"] == "context_length_exceeded"
