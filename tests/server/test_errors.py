"""Bad inputs get OpenAI-shaped JSON errors with the right status, and the replica keeps serving."""
from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MAX_MODEL_LEN, MODEL

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json_is_400(http):
    response = http.post("/v1/completions", content=b'{"prompt": "hi", "max_tokens": ',
                         headers={"content-type": "application/json"})
    error = _error(response, 400)
    assert "malformed JSON" in error["message"] and error["code"] == "invalid_json"


def test_body_that_is_not_an_object_is_400(http):
    assert "JSON object" in _error(http.post("/v1/chat/completions", json=[1, 2]), 400)["message"]


def test_unknown_model_is_404_naming_the_served_model(http):
    error = _error(http.post("/v1/completions", json={"model": "gpt-9", "prompt": "hi"}), 404)
    assert "gpt-9" in error["message"] and f"`{MODEL}`" in error["message"]
    assert error["param"] == "model" and error["code"] == "model_not_found"


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_non_positive_max_tokens_is_400(http, max_tokens):
    error = _error(http.post("/v1/completions", json={"prompt": "hi", "max_tokens": max_tokens}), 400)
    assert error["param"] == "max_tokens" and "greater than or equal to 1" in error["message"]


def test_prompt_over_the_context_is_400_naming_both_lengths(http, tokenizer):
    prompt = "token " * (MAX_MODEL_LEN + 50)
    n = len(tokenizer.encode(prompt))
    error = _error(http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 4}), 400)
    assert str(MAX_MODEL_LEN) in error["message"] and str(n) in error["message"]
    assert error["code"] == "context_length_exceeded"


def test_prompt_plus_max_tokens_over_the_context_is_400(http):
    error = _error(http.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": MAX_MODEL_LEN}), 400)
    assert error["param"] == "max_tokens" and str(MAX_MODEL_LEN) in error["message"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/completions", {"prompt": "hi", "max_tokens": "ten"}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": 42}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "stream": "yes"}, "stream"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": CHAT, "stop": [1, 2]}, "stop"),
    ("/v1/chat/completions", {"messages": CHAT, "stream_options": {"include_usage": "y"}}, "stream_options"),
])
def test_wrong_types_are_400_naming_the_field(http, path, body, field):
    error = _error(http.post(path, json=body), 400)
    assert error["param"].startswith(field) and error["message"].startswith(field)


def test_missing_prompt_is_400(http):
    error = _error(http.post("/v1/completions", json={"max_tokens": 3}), 400)
    assert error["param"] == "prompt" and "required" in error["message"]


@pytest.mark.parametrize("n", [0, 129])
def test_n_outside_openai_bounds_is_a_clear_400(http, n):
    error = _error(http.post("/v1/chat/completions", json={"messages": CHAT, "n": n, "max_tokens": 1}), 400)
    assert error["param"] == "n"


def test_bad_chat_role_is_400(http):
    error = _error(http.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert error["param"] == "messages" and "wizard" in error["message"]


def test_unknown_route_is_an_openai_shaped_404(http):
    _error(http.get("/v1/nothing-here"), 404)


def test_engine_keeps_serving_after_bad_inputs(http):
    for body in ({"prompt": "hi", "max_tokens": -1}, {"prompt": "x " * 2000}, {"prompt": "hi", "top_p": 7}):
        assert http.post("/v1/completions", json=body).status_code == 400
    response = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3
