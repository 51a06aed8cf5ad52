"""Every way a drill request can end is told apart: success, explicit error, timeout, connection error, lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from lab.chaos.drill_client import DrillRequest, completion_body, send_drill_request
from tests.chaos.scripted_http import scripted_server


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with scripted_server() as url:
        yield url


def send(url: str, timeout_s: float = 2.0) -> DrillRequest:
    async def one() -> DrillRequest:
        async with httpx.AsyncClient(trust_env=False, timeout=timeout_s) as http:
            return await send_drill_request(http, url, completion_body("m", "hi", 4, True), tier="vip",
                                            api_key="sk-test", index=7, timeout_s=timeout_s)
    return asyncio.run(one())


@pytest.mark.parametrize(("case", "outcome", "error_type"), [
    ("ok-sse", "success", None),
    ("ok-json", "success", None),
    ("http-503", "error", "http_503:no_replica"),
    ("sse-error", "error", "sse:upstream_broke"),
    ("cut", "cut", "RemoteProtocolError"),  # the transport broke a 200 stream: explicit to the client, not silent
    ("early-eof", "lost", "stream_ended_early"),
    ("empty", "lost", "empty_stream"),
    ("close", "connection_error", "RemoteProtocolError"),
])
def test_each_ending_is_classified(base_url: str, case: str, outcome: str, error_type: str | None) -> None:
    row = send(f"{base_url}/{case}")
    assert (row.outcome, row.error_type) == (outcome, error_type)


def test_the_client_deadline_is_a_timeout(base_url: str) -> None:
    row = send(f"{base_url}/hang", timeout_s=0.3)
    assert row.outcome == "timeout"
    assert 0.25 <= row.ended_at_s - row.sent_at_s < 2.0


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    row = send(f"http://127.0.0.1:{port}/v1/completions")
    assert (row.outcome, row.error_type, row.http_status) == ("connection_error", "ConnectError", None)


def test_a_success_has_ordered_times_and_a_ttft(base_url: str) -> None:
    row = send(f"{base_url}/ok-sse")
    assert row.sent_at_s <= row.first_byte_at_s <= row.first_token_at_s <= row.ended_at_s
    assert row.ttft_s == row.first_token_at_s - row.sent_at_s
    assert (row.index, row.tier, row.http_status) == (7, "vip", 200)


def test_an_explicit_error_keeps_the_server_s_message(base_url: str) -> None:
    row = send(f"{base_url}/http-503")
    assert row.http_status == 503 and "no replica" in row.detail


def test_the_stream_body_asks_for_usage_as_the_bench_does() -> None:
    assert completion_body("m", "p", 3, True)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in completion_body("m", "p", 3, False)
