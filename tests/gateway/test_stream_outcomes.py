"""Streams a replica cut or failed are errors of their tier, never successes: `lab.gateway.sse_outcome` on its
own, then through a real gateway on 127.0.0.1 in front of a purpose-built replica."""

from __future__ import annotations

import json

import pytest

from lab.gateway.sse_outcome import StreamOutcome
from tests.gateway.fakes import auth
from tests.gateway.harness import metric, running_gateway
from tests.gateway.upstreams import UpstreamThread

EVENT = b'data: {"id": "x", "choices": [{"index": 0, "text": "t", "finish_reason": null}]}\n\n'
DONE = b"data: [DONE]\n\n"
ENGINE_ERROR = b'data: {"error": {"message": "the engine failed", "type": "internal_server_error", "code": "e"}}\n\n'


def outcome(*chunks: bytes) -> StreamOutcome:
    watched = StreamOutcome()
    for chunk in chunks:
        watched.feed(chunk)
    return watched


def test_a_stream_ending_with_done_is_ok_even_split_anywhere():
    stream = EVENT * 3 + DONE
    assert outcome(stream).ok
    assert all(outcome(stream[:i], stream[i:]).ok for i in range(1, len(stream)))
    assert outcome(*(stream[i:i + 1] for i in range(len(stream)))).ok  # a byte at a time


def test_a_stream_without_done_is_not_ok():
    assert not outcome(EVENT * 3).ok and "without data: [DONE]" in outcome(EVENT * 3).reason
    assert not outcome().ok


@pytest.mark.parametrize("error", [ENGINE_ERROR, b'data: {"object": "error", "message": "boom", "code": 500}\n\n'])
def test_an_error_event_is_not_ok_even_when_done_follows(error):
    assert not outcome(EVENT, error, DONE).ok
    split = EVENT + error + DONE
    cut = len(EVENT) + 12  # inside the error event's JSON
    watched = outcome(split[:cut], split[cut:])
    assert not watched.ok and watched.error


def test_the_word_error_in_generated_text_is_not_an_error_event():
    text = json.dumps({"choices": [{"text": '{"error": "quoted by the model"}'}]}).encode()
    assert outcome(b"data: " + text + b"\n\n", DONE).ok


@pytest.mark.parametrize(("prompt", "outcome_label", "last_code"), [
    ("fine", "ok", None), ("cut", "error", "upstream_incomplete"), ("error-event", "error", None)])
def test_the_gateway_counts_each_stream_by_how_it_ended(prompt, outcome_label, last_code):
    with UpstreamThread() as a, running_gateway({"a": a.url}) as (client, _):
        with client.stream("POST", "/v1/completions", json={"model": "echo", "prompt": prompt, "stream": True},
                           headers=auth("realtime")) as reply:
            lines = [line for line in reply.iter_lines() if line]
        text = client.get("/metrics").text
        assert metric(text, "lab_gateway_requests_total", tier="realtime", outcome=outcome_label) == 1
        assert metric(text, "lab_gateway_requests_total", tier="realtime") == 1
        if last_code is not None:
            assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == last_code
        elif prompt == "fine":
            assert lines[-1] == "data: [DONE]" and len(lines) == 4
