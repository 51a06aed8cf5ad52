"""Per-replica connection pools for the upstream leg on aiohttp: the plain path (`proxy.client: aiohttp`).

aiohttp costs ~0.25 ms CPU per proxied POST here (httpx ~1.5 ms); `lab.gateway.upstream_http`, the
default, ~0.04 ms with the same interface.

Contract: `UpstreamPools(config, max_connections)` hands out one `aiohttp.ClientSession` per replica
URL (`session(url)`), each over its own `TCPConnector`: keep-alive connections to a replica are
reused by that replica's requests only, at most `max_connections` at once. Sessions are created on
first use, inside the running event loop (aiohttp binds them to it), and set up for a proxy: no
cookies, no automatic decompression (bytes pass through as the replica sent them), no environment
proxies, no status exceptions. `timeout` is the per-request `ClientTimeout`: `connect_timeout_s`
to open a connection, `read_timeout_s` between two reads (as httpx's read timeout), no total limit
(a long generation is not a failure). `close()` closes every pool; `discard(url)` one of them.
"""

from __future__ import annotations

import aiohttp

from lab.gateway.config import ProxyConfig


class UpstreamPools:
    def __init__(self, config: ProxyConfig, max_connections: int) -> None:
        self.max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s,
                                             sock_read=config.read_timeout_s)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, url: str) -> aiohttp.ClientSession:
        session = self._sessions.get(url)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, use_dns_cache=True,
                                             keepalive_timeout=30.0)
            session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                            auto_decompress=False, trust_env=False, timeout=self.timeout,
                                            skip_auto_headers=("User-Agent",))
            self._sessions[url] = session
        return session

    async def discard(self, url: str) -> None:
        session = self._sessions.pop(url, None)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
