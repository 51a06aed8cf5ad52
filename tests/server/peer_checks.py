"""What every transformers peer (`--engine hf`, `--engine hf-cb`) must answer like our engine, through `openai`.

`check_greedy_completions(peer, ours)` and `check_greedy_chat(peer, ours)` take two running servers of the same
model and seed: greedy text, usage and finish reason equal, streamed or not; `check_stop_string(peer, ours)`: a
stop string cuts both answers at the same place.
"""
from __future__ import annotations

import openai

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three GPUs."}]
PROMPTS = ["The fastest way to serve a large language model is", "Paged attention", "1 2 3 4 5 6 7 8 9 10 11"]
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}
MAX_TOKENS = 12


def client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=60)


def streamed_text(stream, chat: bool) -> tuple[str, str | None]:
    parts, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            parts.append((choice.delta.content or "") if chat else choice.text)
            finish = choice.finish_reason or finish
    return "".join(parts), finish


def check_greedy_completions(peer_srv, our_srv, model: str) -> None:
    peer, ours_client = client(peer_srv), client(our_srv)
    for prompt in PROMPTS:
        ours = ours_client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, **GREEDY)
        base = peer.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, **GREEDY)
        assert base.choices[0].text == ours.choices[0].text != ""
        assert base.usage == ours.usage and base.choices[0].finish_reason == "length"
        stream = peer.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, stream=True, **GREEDY)
        assert streamed_text(stream, chat=False) == (ours.choices[0].text, "length")


def check_greedy_chat(peer_srv, our_srv, model: str) -> None:
    peer = client(peer_srv)
    ours = client(our_srv).chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, **GREEDY)
    base = peer.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, **GREEDY)
    assert base.choices[0].message.content == ours.choices[0].message.content != ""
    assert base.usage == ours.usage
    stream = peer.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True, **GREEDY)
    assert streamed_text(stream, chat=True) == (ours.choices[0].message.content, "length")


def check_stop_string(peer_srv, our_srv, model: str) -> None:
    full = client(our_srv).completions.create(model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, **GREEDY)
    stop = full.choices[0].text[4:7]  # a piece of the greedy answer: both must cut right before it
    answers = [c.completions.create(model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, stop=[stop], **GREEDY)
               for c in (client(peer_srv), client(our_srv))]
    cut = full.choices[0].text.find(stop)
    assert answers[0].choices[0].text == answers[1].choices[0].text == full.choices[0].text[:cut]
    assert answers[0].choices[0].finish_reason == "stop"
