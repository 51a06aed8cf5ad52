"""Logprobs the engine reports are the model's: log_softmax of transformers' own logits, token by token.

A tiny checkpoint is built and saved by transformers (tests/engine/hf_fixtures.py) and loaded by
our loader. For requests batched together (mixed prompt lengths, greedy and seeded sampling, a
min_tokens ban that must not change them: they are of the raw logits, as vLLM's default), each
generated token's reported logprob, and its top-k ids and values, must equal log_softmax of the
reference logits of prompt + the tokens before it, within float32 tolerance; both step loops.
"""
from __future__ import annotations

import pytest
import torch

from lab.engine import LLM, SamplingParams
from tests.engine.hf_fixtures import load_reference, make_tiny_checkpoint, reference_logits

PROMPTS = [[5, 17, 42], [100, 3, 250, 7, 9, 11, 300, 2, 64], [77]]
PARAMS = [
    SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, logprobs=3),
    SamplingParams(temperature=0.9, top_k=20, seed=11, max_tokens=5, min_tokens=5, stop_token_ids=(2,), logprobs=5),
    SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, logprobs=0),
]
ATOL = 2e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = make_tiny_checkpoint("deepseek_v3", tmp_path_factory.mktemp("logprobs"))
    return path, load_reference(path)


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["plain", "async"])
def test_reported_logprobs_equal_log_softmax_of_transformers_logits(checkpoint, async_scheduling):
    path, reference = checkpoint
    llm = LLM(str(path), dtype="float32", device="cpu", async_scheduling=async_scheduling, num_gpu_blocks=64,
              block_size=4)
    outs = llm.generate(PROMPTS, PARAMS)
    for prompt, params, out in zip(PROMPTS, PARAMS, outs):
        assert len(out.new_logprobs) == len(out.token_ids) == params.max_tokens  # a final output covers them all
        expected = reference_logits(reference, prompt + out.token_ids).log_softmax(dim=-1)[len(prompt) - 1:]
        for t, (token, lp) in enumerate(zip(out.token_ids, out.new_logprobs)):
            assert lp.token_id == token
            assert lp.logprob == pytest.approx(expected[t, token].item(), abs=ATOL)
            top_values, top_ids = expected[t].topk(params.logprobs)
            assert [i for i, _ in lp.top] == top_ids.tolist()
            assert torch.allclose(torch.tensor([v for _, v in lp.top]), top_values, atol=ATOL)


def test_requests_without_logprobs_get_none():
    llm = LLM("tiny", hf_overrides={"num_hidden_layers": 1}, max_model_len=64, num_gpu_blocks=32)
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert out.new_logprobs == [] and len(out.token_ids) == 3
