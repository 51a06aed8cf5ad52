"""OpenAI shapes without a server: the finish_reason mapping (a server abort stays "abort") and the chunk layout."""
from __future__ import annotations

import json

import pytest

from lab.server.responses import CHAT, COMPLETION, ChoiceResult, ResponseBuilder, Usage, openai_finish_reason


@pytest.mark.parametrize(("engine", "openai"), [("stop", "stop"), ("length", "length"), ("deadline", "length"),
                                                ("abort", "abort"), (None, None)])
def test_engine_finish_reasons_map_to_openai_values(engine, openai):
    assert openai_finish_reason(engine) == openai


def test_chat_chunks_open_with_the_role_and_keep_the_engine_reason():
    builder = ResponseBuilder(CHAT, "chatcmpl-1", 0, "tiny")
    first = json.loads(builder.chunk("Hi", first=True).removeprefix("data: "))
    last = json.loads(builder.chunk("", "deadline").removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["choices"][0]["engine_finish_reason"] == "deadline"


def test_full_completion_body_has_openai_fields():
    body = ResponseBuilder(COMPLETION, "cmpl-1", 5, "tiny").full([ChoiceResult(0, "text", "stop")], Usage(3, 4))
    assert {k: body[k] for k in ("id", "object", "created", "model")} == \
        {"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "tiny"}
    assert body["choices"][0]["text"] == "text" and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
