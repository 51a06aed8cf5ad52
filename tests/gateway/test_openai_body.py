"""The body sent upstream: the tier's priority replaces the client's; splicing equals re-serializing."""

from __future__ import annotations

import json

import pytest

from lab.gateway.openai_body import dumps_for_replica, for_replica, parse_body


@pytest.mark.parametrize("raw", [
    b'{"model": "tiny", "prompt": "hi", "max_tokens": 4}',
    b'{"model":"tiny","messages":[{"role":"user","content":"}"}],"stream":true}\n  ',
    b"{}",
    b' {"prompt": "leading space"}',  # not spliced: the plain path
    b'{"prompt": "x", "priority": -5}',  # the client's priority is replaced, never kept
    '{"prompt": "caf\u00e9"}'.encode("utf-16"),  # json.loads takes UTF-16 too: not spliced
    b'\xef\xbb\xbf{"prompt": "bom"}',
])
@pytest.mark.parametrize("model", [None, "served-name"])
def test_body_for_the_replica_equals_the_re_serialized_one(raw, model):
    request = parse_body(raw, default_max_tokens=16)
    sent = for_replica(request, 3, model)
    assert json.loads(sent) == json.loads(dumps_for_replica(request.body, 3, model))
    assert json.loads(sent)["priority"] == 3 and sent.decode("utf-8")  # UTF-8 on the wire whatever came in


def test_a_body_without_priority_is_spliced_not_re_serialized():
    raw = b'{"prompt": "x",   "max_tokens": 2}'
    assert for_replica(parse_body(raw, 16), 1, None) == b'{"prompt": "x",   "max_tokens": 2,"priority":1}'
