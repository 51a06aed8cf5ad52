"""The official `openai` client against a live `lab serve`: shapes, usage, streaming, stops."""
from __future__ import annotations

import openai
import pytest

from tests.server.conftest import MODEL

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three GPUs."}]
PROMPT = "The fastest way to serve a large language model is"
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _stream_text(stream, chat: bool) -> tuple[str, list]:
    chunks = list(stream)
    parts = []
    for chunk in chunks:
        for choice in chunk.choices:
            parts.append((choice.delta.content or "") if chat else choice.text)
    return "".join(parts), chunks


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_completion_usage_counts_and_length(client, tokenizer):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=7, **GREEDY)
    assert out.object == "text_completion" and out.id.startswith("cmpl-") and out.model == MODEL
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7


def test_chat_usage_counts_and_shape(client, tokenizer):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, **GREEDY)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(tokenizer.apply_chat_template(MESSAGES, tokenize=True))
    assert out.usage.completion_tokens == 5


def test_max_completion_tokens_wins_over_max_tokens(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9, max_completion_tokens=3,
                                         **GREEDY)
    assert out.usage.completion_tokens == 3


def test_completion_stream_concatenates_to_the_non_streamed_text(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, **GREEDY)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, stream=True,
                                       stream_options={"include_usage": True}, **GREEDY)
    text, chunks = _stream_text(stream, chat=False)
    assert text == full.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_concatenates_to_the_non_streamed_text(client):
    full = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, **GREEDY)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, stream=True, **GREEDY)
    text, chunks = _stream_text(stream, chat=True)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_stop_string_cuts_the_text_streamed_or_not(client):
    free = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, **GREEDY).choices[0].text
    stop = free[len(free) // 2: len(free) // 2 + 2]
    expected = free[: free.find(stop)]
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, stop=[stop], **GREEDY)
    assert out.choices[0].text == expected and out.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, stop=stop, stream=True, **GREEDY)
    text, chunks = _stream_text(stream, chat=False)
    assert text == expected and chunks[-1].choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable_and_extra_params_pass(client):
    def sample() -> str:
        return client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=7,
            extra_body={"top_k": 50, "ignore_eos": True, "priority": 2, "min_tokens": 8},
        ).choices[0].text

    assert sample() == sample()


def test_prompt_as_token_ids(client, tokenizer):
    ids = tokenizer.encode(PROMPT)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, **GREEDY)
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, **GREEDY)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)
