"""`lab.gateway.upstream_http`: the same answers as aiohttp (the plain path), keep-alive, limits, failures."""

from __future__ import annotations

import asyncio

import pytest

from lab.gateway.config import ProxyConfig
from lab.gateway.connection_pools import UpstreamPools
from lab.gateway.upstream_http import HttpPools, UpstreamError

HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}
JSON = b'{"choices": [{"text": "ok"}]}'


class Replica:
    """A raw asyncio HTTP server: /json (Content-Length), /stream (chunked, 3 chunks), /missing (404),
    /eof (a body ended by closing), /silent (never answers), /bye (answers, then closes the connection)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                path = head.split(b" ")[1]
                if path == b"/json" or path == b"/bye":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(JSON), JSON))
                    if path == b"/bye":
                        await writer.drain()
                        writer.close()
                        return
                elif path == b"/stream":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    for i in range(3):
                        event = b"data: %d\n\n" % i
                        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                        await writer.drain()
                        await asyncio.sleep(0.02)
                    writer.write(b"0\r\n\r\n")
                elif path == b"/missing":
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                elif path == b"/eof":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end")
                    await writer.drain()
                    writer.close()
                    return
                elif path == b"/silent":
                    await asyncio.sleep(10)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def answer(pools, url: str, path: str) -> tuple[int, str, list[bytes]]:
    response = await pools.session(url).post(url + path, data=b'{"prompt": "x"}', headers=HEADERS)
    chunks = []
    while chunk := await response.content.readany():
        chunks.append(chunk)
    response.release()
    return response.status, response.headers.get("content-type", ""), chunks


@pytest.mark.parametrize("path", ["/json", "/stream", "/missing", "/eof"])
def test_same_answer_as_aiohttp(path):
    async def scenario():
        async with Replica() as url:
            lab, plain = HttpPools(ProxyConfig(), 4), UpstreamPools(ProxyConfig(), 4)
            try:
                ours, theirs = await answer(lab, url, path), await answer(plain, url, path)
            finally:
                await lab.close()
                await plain.close()
        assert (ours[0], ours[1], b"".join(ours[2])) == (theirs[0], theirs[1], b"".join(theirs[2]))
        if path == "/stream":
            assert b"".join(ours[2]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(ours[2]) >= 2  # as they came

    asyncio.run(scenario())


def test_keep_alive_reuse_a_limit_of_one_and_a_retry_after_the_replica_closed_an_idle_connection():
    async def scenario():
        replica = Replica()
        async with replica as url:
            pools = HttpPools(ProxyConfig(), max_connections=1)
            results = await asyncio.gather(*(answer(pools, url, "/json") for _ in range(3)))
            assert [r[0] for r in results] == [200] * 3 and replica.connections == 1  # one at a time, reused
            assert replica.requests[0].startswith(b"POST /json HTTP/1.1\r\nhost: 127.0.0.1:")
            await answer(pools, url, "/bye")  # the replica closes this connection once it answered
            await asyncio.sleep(0.05)
            assert (await answer(pools, url, "/json"))[0] == 200 and replica.connections == 2
            await pools.close()

    asyncio.run(scenario())


def test_a_silent_replica_times_out_and_a_closed_port_is_an_upstream_error():
    async def scenario():
        async with Replica() as url:
            pools = HttpPools(ProxyConfig(read_timeout_s=0.2), max_connections=2)
            with pytest.raises(asyncio.TimeoutError):
                await pools.session(url).post(url + "/silent", data=b"{}", headers=HEADERS)
            assert (await answer(pools, url, "/json"))[0] == 200  # the silent connection was dropped, not reused
            await pools.close()
        closed = "http://127.0.0.1:9"  # discard port: nothing listens
        with pytest.raises(UpstreamError):
            await HttpPools(ProxyConfig(), 1).session(closed).post(closed + "/json", data=b"{}", headers=HEADERS)

    asyncio.run(scenario())
