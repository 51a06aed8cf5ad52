"""Logprobs through the official `openai` client equal log_softmax of transformers' own logits.

Completions (`logprobs=k`): a tiny DeepSeek-V3 checkpoint built and saved by transformers
(`tests/engine/hf_fixtures.py`) is served by `lab serve --model DIR --device cpu --dtype float32`;
for every generated token the reported logprob and its top-k (ids through vLLM's
`return_tokens_as_token_ids`) must equal log_softmax of `from_pretrained`'s logits of the prompt
plus the tokens before it. Chat (`logprobs: true`, `top_logprobs`) on the shared `tiny` replica:
the reference is transformers' own DeepseekV3ForCausalLM holding the same weights
(`lab.server.hf_model.load_hf_model`). Streamed logprobs add up to the non-streamed ones, and by
default a token is named by its text.
"""
from __future__ import annotations

import openai
import pytest
import torch

from tests.engine.hf_fixtures import load_reference, make_tiny_checkpoint, reference_logits
from tests.server.conftest import MODEL, launch

ATOL = 1e-3  # float32 on CPU, different kernels: differences are ~1e-5
PROMPTS = [[5, 17, 42, 9], [300, 2, 64]]
IDS = {"return_tokens_as_token_ids": True, "ignore_eos": True}
MESSAGES = [{"role": "user", "content": "Name three GPUs."}]
CKPT = "tiny-ckpt"


def _id(token: str) -> int:
    assert token.startswith("token_id:"), token
    return int(token.removeprefix("token_id:"))


def _check_against(reference, prompt: list[int], ids: list[int], chosen: list[float], tops: list[dict[int, float]],
                   k: int) -> None:
    expected = reference_logits(reference, prompt + ids).log_softmax(dim=-1)[len(prompt) - 1: -1]
    assert len(ids) == len(chosen) == len(tops) == expected.shape[0]
    for t, token in enumerate(ids):
        assert chosen[t] == pytest.approx(expected[t, token].item(), abs=ATOL)
        values, top_ids = expected[t].topk(k)
        assert set(top_ids.tolist()) <= set(tops[t])  # top-k, plus the chosen token when it is not in it
        assert torch.allclose(torch.tensor([tops[t][i] for i in top_ids.tolist()]), values, atol=ATOL)


@pytest.fixture(scope="module")
def checkpoint_server(tmp_path_factory):
    path = make_tiny_checkpoint("deepseek_v3", tmp_path_factory.mktemp("ckpt"))
    srv = launch("--model", str(path), "--served-model-name", CKPT, "--device", "cpu", "--dtype", "float32",
                 "--num-gpu-blocks", "64", tmp_dir=tmp_path_factory.mktemp("serve-ckpt"), base_flags=())
    try:
        reference = load_reference(path)
        srv.wait_ready()
        yield openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=60), reference
    finally:
        srv.stop()


def test_completion_logprobs_equal_transformers(checkpoint_server):
    client, reference = checkpoint_server
    out = client.completions.create(model=CKPT, prompt=PROMPTS, max_tokens=4, logprobs=3, temperature=0.7, seed=3,
                                    extra_body=IDS)
    for prompt, choice in zip(PROMPTS, out.choices):
        lp = choice.logprobs
        ids = [_id(t) for t in lp.tokens]
        tops = [{_id(t): v for t, v in top.items()} for top in lp.top_logprobs]
        _check_against(reference, prompt, ids, lp.token_logprobs, tops, k=3)


def test_streamed_completion_logprobs_add_up_to_the_full_ones(checkpoint_server):
    client, _ = checkpoint_server
    kwargs = dict(model=CKPT, prompt=PROMPTS[0], max_tokens=5, logprobs=2, temperature=0.0, extra_body=IDS)
    full = client.completions.create(**kwargs).choices[0].logprobs
    tokens, values, offsets = [], [], []
    for chunk in client.completions.create(stream=True, **kwargs):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            lp = chunk.choices[0].logprobs
            tokens += lp.tokens
            values += lp.token_logprobs
            offsets += lp.text_offset
    assert (tokens, values, offsets) == (full.tokens, full.token_logprobs, full.text_offset)
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


@pytest.fixture(scope="module")
def tiny_reference():
    from lab.engine.args import EngineArgs
    from lab.server.hf_model import load_hf_model

    # The shared replica's model: tiny, 2 layers, seed 0 (tests/server/conftest.py SMALL_MODEL_FLAGS).
    return load_hf_model(EngineArgs(model=MODEL, hf_overrides={"num_hidden_layers": 2}, device="cpu")).module


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_logprobs_equal_transformers(client, tiny_reference, tokenizer):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0.0,
                                         logprobs=True, top_logprobs=4, extra_body=IDS)
    content = out.choices[0].logprobs.content
    ids = [_id(entry.token) for entry in content]
    assert all(len(entry.top_logprobs) == 4 for entry in content)
    tops = [{_id(top.token): top.logprob for top in entry.top_logprobs} | {_id(entry.token): entry.logprob}
            for entry in content]
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=True)
    _check_against(tiny_reference, prompt, ids, [entry.logprob for entry in content], tops, k=4)


def test_chat_logprobs_name_tokens_by_text_by_default(client, tokenizer):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0.0,
                                         logprobs=True, extra_body={"ignore_eos": True})
    content = out.choices[0].logprobs.content
    ids = [_id(e.token) for e in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0.0, logprobs=True, extra_body=IDS,
    ).choices[0].logprobs.content]
    assert [e.token for e in content] == [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    assert all(e.bytes == list(e.token.encode()) and e.top_logprobs == [] for e in content)
