"""Bodies the gateway cannot parse, or that nest too deep, get a 400 in OpenAI's error shape; nothing gets a
plain-text 500. Over real HTTP on 127.0.0.1, on both of the gateway's servers."""

from __future__ import annotations

import json

import httpx
import pytest

from lab.gateway.app import build_app
from lab.gateway.errors import GatewayError
from lab.gateway.openai_body import MAX_JSON_DEPTH, parse_body
from tests.gateway.fakes import auth, free_port, make_config, serve
from tests.gateway.harness import running_gateway
from tests.gateway.upstreams import UpstreamThread


def nested(depth: int) -> bytes:
    """A body whose prompt nests lists so that the whole object is `depth` containers deep."""
    return b'{"model": "echo", "prompt": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


def assert_openai_400(reply) -> dict:
    assert reply.status_code == 400 and reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("server", ["lab", "uvicorn"])
def test_json_nested_100k_deep_is_a_400_in_openai_shape(server):
    with UpstreamThread() as a, running_gateway({"a": a.url}, server=server) as (client, _):
        reply = client.post("/v1/completions", content=nested(100_000), headers=auth("vip"))
        assert "nests deeper" in assert_openai_400(reply)["message"]
        assert client.post("/v1/completions", json={"model": "echo", "prompt": "hi"}, headers=auth("vip")).json()[
            "choices"][0]["text"] == "ok"  # and the gateway serves on


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}", b'["a list"]', b"", b'{"prompt": "x"'])
def test_bodies_that_do_not_parse_to_an_object_are_a_400_in_openai_shape(raw):
    with UpstreamThread() as a, running_gateway({"a": a.url}) as (client, _):
        assert_openai_400(client.post("/v1/completions", content=raw, headers=auth("vip")))


def test_the_depth_limit_is_exact():
    assert parse_body(nested(MAX_JSON_DEPTH), 16).body["model"] == "echo"
    with pytest.raises(GatewayError, match="nests deeper") as refused:
        parse_body(nested(MAX_JSON_DEPTH + 1), 16)
    assert refused.value.status == 400
    deep_dicts = b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)  # objects are levels too
    with pytest.raises(GatewayError, match="nests deeper"):
        parse_body(deep_dicts, 16)
    many_shallow = json.dumps({"messages": [{"role": "user", "content": "x"}] * 500}).encode()
    assert len(parse_body(many_shallow, 16).body["messages"]) == 500  # many brackets, little depth


@pytest.mark.parametrize("server", ["lab", "uvicorn"])
def test_an_unforeseen_failure_is_a_500_in_openai_shape_not_plain_text(server):
    async def broken() -> None:
        raise RuntimeError("a bug nobody foresaw")

    with UpstreamThread() as a:
        app = build_app(make_config([{"url": a.url, "version": "v1"}]), run_health=False)
        app.fallback.add_api_route("/broken", broken)  # a route that fails: the app's catch-all answers it
        with serve(app, server) as running:
            reply = httpx.get(running.url + "/broken")
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal_error"


def test_models_from_an_unreachable_replica_is_a_502_in_openai_shape():
    with running_gateway({"a": f"http://127.0.0.1:{free_port()}"}) as (client, _):
        reply = client.get("/v1/models", headers=auth("vip"))
        assert reply.status_code == 502 and reply.json()["error"]["code"] == "upstream_failed"
