"""A minimal OpenAI-shaped HTTP upstream: the cheapest server the gateway can front, for latency benches.

Contract: `python -m lab.studies.gateway_latency.upstream --port N` serves HTTP/1.1 with keep-alive on
127.0.0.1:N until SIGTERM/SIGINT. `GET /v1/models` answers a one-model list (`model: "echo"`), any
other request a fixed, non-streaming `/v1/completions` JSON of one token ("ok"), with Content-Length,
after reading its whole body. No framework: an asyncio `Protocol` with the `httptools` parser on
uvloop (when installed), so nearly all the time a request spends here is the kernel's and the
parser's, and the difference "through the gateway minus straight here" is the gateway's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import httptools

MODEL = "echo"
_COMPLETION = json.dumps({
    "id": "cmpl-echo", "object": "text_completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "text": "ok", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "lab"}]}).encode()


def _response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


_COMPLETION_RESPONSE, _MODELS_RESPONSE = _response(_COMPLETION), _response(_MODELS)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parse requests as bytes arrive, answer each when it is complete."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        is_models = self.parser.get_method() == b"GET" and self.url.startswith(b"/v1/models")
        self.transport.write(_MODELS_RESPONSE if is_models else _COMPLETION_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"latency upstream: http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
