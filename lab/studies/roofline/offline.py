"""Offline throughput on the nano-vllm workload: N requests, input and output lengths uniform.

`offline_requests(256, 100, 1024, vocab)` draws (prompt token ids, output length) pairs, seeded;
`measure_offline(llm, requests)` submits them all at once (ignore_eos, exactly the drawn output
length each) and reports generated tokens over the wall time of the whole batch, prefill
included, as nano-vllm's bench.py does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from lab.engine.llm import LLM
from lab.engine.throughput import measure_generate


@dataclass(frozen=True)
class OfflineRequest:
    prompt_token_ids: list[int]
    output_len: int


@dataclass(frozen=True)
class OfflinePoint:
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float  # (prompt + output) / wall


def offline_requests(num: int, min_len: int, max_len: int, vocab_size: int, seed: int = 0) -> list[OfflineRequest]:
    rng = random.Random(seed)
    reqs = []
    for _ in range(num):
        n_in = rng.randint(min_len, max_len)
        prompt = [rng.randrange(16, vocab_size) for _ in range(n_in)]
        reqs.append(OfflineRequest(prompt, rng.randint(min_len, max_len)))
    return reqs


def measure_offline(llm: LLM, requests: list[OfflineRequest]) -> OfflinePoint:
    stats = measure_generate(llm, [r.prompt_token_ids for r in requests], [r.output_len for r in requests])
    return OfflinePoint(
        num_requests=stats.num_requests,
        prompt_tokens=stats.prompt_tokens,
        output_tokens=stats.output_tokens,
        wall_s=stats.wall_s,
        output_tokens_per_s=stats.output_tokens_per_s,
        total_tokens_per_s=stats.total_tokens_per_s,
    )
