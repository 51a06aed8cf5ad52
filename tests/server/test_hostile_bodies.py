"""Hostile request bodies get a 4xx in OpenAI's error shape, never a 500, and the replica keeps serving.

A lone UTF-16 surrogate (JSON may escape one; Python decodes it into a string with no UTF-8 form)
is a 400 naming the field that holds it, for completions and chat alike (chat used to blame
`chat_template_kwargs`); a properly paired surrogate (an emoji) still works. JSON nested 100k
deep is a 400 `invalid_json`. A body over the size limit is a 413 naming the limit, whether its
Content-Length says so or it arrives chunked without one.
"""
from __future__ import annotations

import httpx
import pytest

from tests.server.test_poison_requests import _error

LIMIT = 8 * 2**20  # lab serve's default --max-request-bytes
JSON = {"content-type": "application/json"}


def _post(server, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=raw, headers=JSON, timeout=60)


@pytest.mark.parametrize(("path", "raw", "param"), [
    ("/v1/completions", rb'{"prompt": "abc\ud800def", "max_tokens": 2}', "prompt"),
    ("/v1/completions", rb'{"prompt": ["ok", "x\udfff"], "max_tokens": 2}', "prompt.1"),
    ("/v1/chat/completions", rb'{"messages": [{"role": "user", "content": "hi \ud83d"}]}', "messages.0.content"),
    ("/v1/chat/completions", rb'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\udc00"]}', "stop.0"),
    ("/v1/completions", rb'{"prompt": "hi", "model": "\ud800"}', "model"),
])
def test_a_lone_surrogate_is_a_400_naming_its_field(server, path, raw, param):
    error = _error(_post(server, path, raw))
    assert error["param"] == param and error["code"] == "invalid_unicode" and "surrogate" in error["message"]


def test_a_paired_surrogate_is_ordinary_text(server):
    response = _post(server, "/v1/chat/completions",
                     rb'{"messages": [{"role": "user", "content": "hi \ud83d\ude00"}], "max_tokens": 2}')
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_json_nested_100k_deep_is_a_400_in_openai_shape(server, path):
    depth = 100_000
    for raw in (b"[" * depth + b"]" * depth, b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"):
        assert _error(_post(server, path, raw))["code"] == "invalid_json"


def test_a_body_over_the_limit_is_a_413_naming_the_limit(server):
    raw = b'{"prompt": "' + b"a" * LIMIT + b'"}'
    error = _error(_post(server, "/v1/completions", raw), 413)
    assert str(LIMIT) in error["message"] and "--max-request-bytes" in error["message"]
    assert error["code"] == "request_too_large"


def test_a_chunked_body_over_the_limit_is_a_413_too(server):
    def chunks():  # no Content-Length: the server must count what arrives
        yield b'{"prompt": "'
        for _ in range(LIMIT // 2**20 + 1):
            yield b"a" * 2**20
        yield b'"}'

    response = httpx.post(f"{server.url}/v1/completions", content=chunks(), headers=JSON, timeout=60)
    assert _error(response, 413)["code"] == "request_too_large"


def test_the_replica_still_serves_after_hostile_bodies(server):
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "ignore_eos": True},
                          timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 2
