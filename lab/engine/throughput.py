"""Offline generation measured in physical units: tokens/s, time to first token, latency.

`measure_generate` runs one batch of requests through `LLM.generate` and reduces the outputs'
own timestamps (`RequestOutput.metrics`) to a `GenerateStats` record. Random prompts of exact
token counts come from `random_prompts`, seeded, so two runs see the same work.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass

from lab.engine.llm import LLM
from lab.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class GenerateStats:
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float
    output_tokens_per_s: float  # generated tokens over the wall time of the whole batch
    total_tokens_per_s: float  # prompt + generated tokens over the wall time
    ttft_mean_s: float
    ttft_p50_s: float
    e2e_mean_s: float

    def as_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def random_prompts(num_prompts: int, prompt_len: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Token-id prompts of exactly `prompt_len` tokens, avoiding the first 16 (special) ids."""
    rng = random.Random(seed)
    return [[rng.randrange(16, vocab_size) for _ in range(prompt_len)] for _ in range(num_prompts)]


def measure_generate(llm: LLM, prompts: list[list[int]], max_tokens: int | list[int]) -> GenerateStats:
    """Generate exactly `max_tokens` per prompt (one count, or one per prompt; ignore_eos) and measure the batch."""
    counts = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in counts]
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    wall_s = time.perf_counter() - start
    prompt_tokens = sum(len(p) for p in prompts)
    output_tokens = sum(len(o.token_ids) for o in outs)
    ttfts = [o.metrics.time_to_first_token_s for o in outs]
    return GenerateStats(
        num_requests=len(outs),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        wall_s=wall_s,
        output_tokens_per_s=output_tokens / wall_s,
        total_tokens_per_s=(prompt_tokens + output_tokens) / wall_s,
        ttft_mean_s=statistics.fmean(ttfts),
        ttft_p50_s=statistics.median(ttfts),
        e2e_mean_s=statistics.fmean(o.metrics.e2e_latency_s for o in outs),
    )
