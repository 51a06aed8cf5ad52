"""The transformers baseline (`--engine hf`) answers logprobs, `n` and lists of prompts as our engine does.

Both replicas serve the same tiny weights (the session's `server` and `hf_server`, which runs requests in
left-padded static batches of 2); the baseline's logprobs come from transformers' own forward pass. For a list of prompts with n=2 and `logprobs=3` (tokens as ids), every choice's
tokens must be our engine's and every logprob and top-k entry within float32 tolerance of ours.
"""
from __future__ import annotations

import openai
import pytest

from tests.server.conftest import MODEL

PROMPTS = ["The fastest way to serve", "Paged attention is"]
ATOL = 1e-3
KWARGS = dict(model=MODEL, prompt=PROMPTS, n=2, max_tokens=5, logprobs=3, temperature=0.0,
              extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True})


def _answer(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60).completions.create(**KWARGS)


def test_baseline_logprobs_n_and_prompt_lists_equal_our_engine(hf_server, server):
    ours, base = _answer(server.url), _answer(hf_server.url)
    assert [c.index for c in base.choices] == [0, 1, 2, 3] and base.usage == ours.usage
    for mine, theirs in zip(ours.choices, base.choices):
        assert theirs.text == mine.text and theirs.logprobs.tokens == mine.logprobs.tokens
        assert theirs.logprobs.token_logprobs == pytest.approx(mine.logprobs.token_logprobs, abs=ATOL)
        for top_theirs, top_mine in zip(theirs.logprobs.top_logprobs, mine.logprobs.top_logprobs):
            assert set(top_theirs) == set(top_mine)
            assert [top_theirs[k] for k in top_mine] == pytest.approx(list(top_mine.values()), abs=ATOL)
