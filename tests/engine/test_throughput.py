"""`measure_generate` counts exactly the work it asked for and derives rates from it."""
from __future__ import annotations

import pytest

from lab.engine import LLM
from lab.engine.throughput import measure_generate, random_prompts


def test_random_prompts_are_seeded_and_exact():
    a = random_prompts(3, 7, vocab_size=100, seed=1)
    assert a == random_prompts(3, 7, vocab_size=100, seed=1)
    assert a != random_prompts(3, 7, vocab_size=100, seed=2)
    assert [len(p) for p in a] == [7, 7, 7] and all(16 <= t < 100 for p in a for t in p)


def test_measure_generate_counts_tokens_and_rates():
    llm = LLM("tiny", num_gpu_blocks=64)
    stats = measure_generate(llm, random_prompts(4, 9, vocab_size=1000), max_tokens=5)
    assert (stats.num_requests, stats.prompt_tokens, stats.output_tokens) == (4, 36, 20)
    assert stats.output_tokens_per_s == pytest.approx(20 / stats.wall_s)
    assert stats.total_tokens_per_s == pytest.approx(56 / stats.wall_s)
    assert 0 < stats.ttft_p50_s <= stats.e2e_mean_s <= stats.wall_s
