"""The gateway-latency study's minimal upstream plus `GET /metrics`, so a real Prometheus scrapes it (`up == 1`).

`python tests/service/metrics_upstream.py --port N [--host H]` answers like `lab.studies.gateway_latency.upstream`
(a fixed one-token completion for any request, `/ready` included) and `GET /metrics` with a Prometheus
text page counting the requests it answered (`lab_test_upstream_requests_total`). A real process and a
real server on 127.0.0.1, for tests that need a replica but not an engine. `--crash-if-exists PATH`:
exit with status 1 at once when PATH exists (a test turns a healthy replica into a crash loop).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from lab.studies.gateway_latency import upstream

COUNTER = "lab_test_upstream_requests_total"


class _Connection(upstream._Connection):
    answered = 0  # requests answered by this process (all connections)

    def on_message_complete(self) -> None:
        _Connection.answered += 1
        if self.parser.get_method() == b"GET" and self.url.startswith(b"/metrics"):
            page = f"# TYPE {COUNTER} counter\n{COUNTER} {_Connection.answered}\n".encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: "
                                 + str(len(page)).encode() + b"\r\n\r\n" + page)
            if not self.parser.should_keep_alive():
                self.transport.close()
            return
        super().on_message_complete()


async def serve(port: int, host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, host, port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="a netns replica listens on its namespace's address")
    parser.add_argument("--crash-if-exists", type=Path)
    args = parser.parse_args()
    if args.crash_if_exists is not None and args.crash_if_exists.exists():
        sys.exit(f"crash on purpose: {args.crash_if_exists} exists")  # status 1, the message in the log
    asyncio.run(serve(args.port, args.host))
