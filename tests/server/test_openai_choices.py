"""The official `openai` client against a live `lab serve`: a list of prompts, `n`, and usage in streams.

OpenAI and vLLM answer a list of prompts with one choice per prompt (times `n`), in index order
`prompt_index * n + i`. Here: each choice equals the answer to its prompt alone (greedy); `n`
seeded choices differ from each other and repeat on a second call; the streamed chunks of every
choice add up to the non-streamed text with exactly one finish per choice; usage counts every
prompt once and every choice's tokens, in the body and in the `include_usage` last chunk (empty
choices). Fields still unsupported are a 400 naming them.
"""
from __future__ import annotations

from collections import defaultdict

import openai
import pytest

from tests.server.conftest import MODEL

PROMPTS = ["The fastest way to serve a large language model is", "One two three", "GPUs"]
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}
SEEDED = {"temperature": 1.0, "seed": 1234, "extra_body": {"ignore_eos": True}}
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def alone(client) -> list[str]:
    return [client.completions.create(model=MODEL, prompt=p, max_tokens=MAX_TOKENS, **GREEDY).choices[0].text
            for p in PROMPTS]


def test_a_list_of_prompts_gets_one_choice_per_prompt_in_order(client, alone, tokenizer):
    out = client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=MAX_TOKENS, **GREEDY)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert [c.text for c in out.choices] == alone
    assert out.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in PROMPTS)
    assert out.usage.completion_tokens == MAX_TOKENS * len(PROMPTS)


def test_a_list_of_token_id_prompts_is_answered_the_same(client, alone, tokenizer):
    out = client.completions.create(model=MODEL, prompt=[tokenizer.encode(p) for p in PROMPTS],
                                    max_tokens=MAX_TOKENS, **GREEDY)
    assert [c.text for c in out.choices] == alone


def test_n_choices_per_prompt_are_indexed_prompt_major(client, alone):
    out = client.completions.create(model=MODEL, prompt=PROMPTS[:2], n=2, max_tokens=MAX_TOKENS, **GREEDY)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [alone[0], alone[0], alone[1], alone[1]]  # greedy: n equal choices
    assert out.usage.completion_tokens == 4 * MAX_TOKENS


def test_n_seeded_choices_differ_and_repeat(client):
    def sample() -> list[str]:
        out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=3,
                                             max_tokens=MAX_TOKENS, **SEEDED)
        assert [c.index for c in out.choices] == [0, 1, 2]
        return [c.message.content for c in out.choices]

    first = sample()
    assert len(set(first)) == 3 and sample() == first


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_streamed_choices_add_up_with_one_finish_each_and_usage_last(client, chat):
    kwargs = dict(model=MODEL, max_tokens=MAX_TOKENS, n=2, **SEEDED)
    if chat:
        kwargs["messages"] = [{"role": "user", "content": "Name three GPUs."}]
        create = client.chat.completions.create
    else:
        kwargs["prompt"] = PROMPTS[:2]
        create = client.completions.create
    full = create(**kwargs)
    chunks = list(create(stream=True, stream_options={"include_usage": True}, **kwargs))
    texts, finishes = defaultdict(str), defaultdict(list)
    for chunk in chunks[:-1]:
        assert chunk.usage is None and len(chunk.choices) == 1
        choice = chunk.choices[0]
        texts[choice.index] += (choice.delta.content or "") if chat else choice.text
        if choice.finish_reason is not None:
            finishes[choice.index].append(choice.finish_reason)
    expected = {c.index: c.message.content if chat else c.text for c in full.choices}
    assert dict(texts) == expected and len(expected) == (2 if chat else 4)
    assert dict(finishes) == {i: ["length"] for i in expected}
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


@pytest.mark.parametrize(("kwargs", "param"), [
    (dict(echo=True), "echo"),
    (dict(suffix="!"), "suffix"),
    (dict(best_of=3), "best_of"),
    (dict(logit_bias={"5": 1.0}), "logit_bias"),
    (dict(presence_penalty=0.5), "presence_penalty"),
    (dict(frequency_penalty=0.5), "frequency_penalty"),
])
def test_unsupported_fields_are_a_400_naming_them(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2, **kwargs)
    assert refused.value.body["param"] == param and param in refused.value.body["message"]


def test_chat_tools_are_a_400_naming_them(client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[tool])
    assert refused.value.body["param"] == "tools"
