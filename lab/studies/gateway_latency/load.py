"""A cheap open-loop HTTP load generator: fixed request rate, keep-alive connections, C-parsed responses.

Contract: `await fire(host, port, request, rate_per_s, duration_s)` sends the raw HTTP/1.1 `request`
bytes (build them with `completion_request`) at constant intervals of `1 / rate_per_s` for
`duration_s`, each on an idle keep-alive connection (a new one is opened only when all are busy:
open-loop, a slow server never slows the schedule down), and returns a `LoadSamples` record:
per request, the latency from the write to the last byte of the response (Content-Length or
chunked, parsed by `httptools`), its status, and how late it left against its schedule (a client
that cannot keep up shows here, not as server latency). Timings use `time.perf_counter()`.
It is a measuring instrument, so it does as little as possible per request: no httpx, no JSON.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httptools


def completion_request(host: str, port: int, api_key: str | None, body: bytes) -> bytes:
    """The raw bytes of a keep-alive `POST /v1/completions`."""
    auth = b"authorization: Bearer " + api_key.encode() + b"\r\n" if api_key else b""
    return (b"POST /v1/completions HTTP/1.1\r\nhost: " + f"{host}:{port}".encode() + b"\r\n"
            b"content-type: application/json\r\n" + auth + b"content-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


@dataclass(frozen=True)
class LoadSamples:
    latencies_s: tuple[float, ...]  # write -> last response byte, one per finished request
    statuses: tuple[int, ...]  # HTTP status, same order
    send_lag_s: tuple[float, ...]  # actual write time minus scheduled time, same order
    failures: int  # connection errors (no status)
    connections: int  # connections opened
    wall_s: float


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def send(self, request: bytes) -> int:
        if self.transport.is_closing():
            raise ConnectionError("connection closed by the server")
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.done


async def fire(host: str, port: int, request: bytes, rate_per_s: float, duration_s: float,
               warm_connections: int = 8) -> LoadSamples:
    if not rate_per_s > 0 or not duration_s > 0:
        raise ValueError(f"rate_per_s and duration_s must be > 0, got {rate_per_s}, {duration_s}")
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    opened = 0

    async def connect() -> _Connection:
        nonlocal opened
        opened += 1
        _, protocol = await loop.create_connection(_Connection, host, port)
        return protocol

    for _ in range(warm_connections):
        idle.append(await connect())
    latencies, statuses, lags = [], [], []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        while idle and idle[-1].transport.is_closing():  # the server closed it while idle (keep-alive timeout)
            idle.pop()
        connection = idle.pop() if idle else await connect()
        start = time.perf_counter()
        try:
            status = await connection.send(request)
        except (ConnectionError, OSError):
            failures += 1
            return
        latencies.append(time.perf_counter() - start)
        statuses.append(status)
        lags.append(start - scheduled)
        idle.append(connection)

    interval_s = 1.0 / rate_per_s
    count = int(rate_per_s * duration_s)
    tasks = []
    begin = time.perf_counter()
    for i in range(count):
        scheduled = begin + i * interval_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    wall_s = time.perf_counter() - begin
    for connection in idle:
        connection.transport.close()
    return LoadSamples(tuple(latencies), tuple(statuses), tuple(lags), failures, opened, wall_s)
