"""Hostile load as chaostoolkit activities: floods a service must shrug off without ejecting anyone.

Contract (each blocks for `duration_s`, then stops its own senders and closes what it opened; run it while
the drill load runs in the background, so the drill's VIP requests measure what the flood costs them):
- `flood_wrong_keys(base_url, duration_s, threads=6, distinct=True)`: completions with API keys the gateway
  never issued (a new one each time, or one repeated); every answer should be a 401 (and checking a wrong key must not stall the gateway's event loop).
- `flood_poison(base_url, api_key, duration_s, threads=6, bodies=POISON_BODIES)`: completions from one
  real batch key that the replica must refuse with a 400 naming the field (values the engine cannot
  represent; `bodies` cycle, sent as they are); a client's own fault, so the gateway must neither retry
  them nor count them against the replica.
- `hold_idle_connections(base_url, count=1000, duration_s)`: `count` TCP connections to the gateway, half
  silent, half sending a request head that never ends (slowloris), held for the whole duration.
Each returns a `FaultRecord` dict (backend "load") with `started_monotonic_s` / `stopped_monotonic_s` (the
drill's fault window), `sent` and the answers by HTTP status (`statuses`; "connection_error" when none
came), or, for connections, how many were opened and refused. Bad arguments are `LabError`s naming them.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from lab.chaos.records import FaultRecord
from lab.errors import LabError
from lab.gateway.http_limits import raise_fd_limit

__all__ = ["flood_wrong_keys", "flood_poison", "hold_idle_connections", "POISON_BODIES"]

# Bodies a replica refuses with a 400 (lab.server's validation): numbers past 64 bits, token ids past any
# vocabulary. The gateway forwards them (it does not parse sampling fields), so they reach a replica.
POISON_BODIES = (
    {"prompt": "hi", "seed": 2 ** 70, "max_tokens": 1},
    {"prompt": "hi", "top_k": 2 ** 64, "max_tokens": 1},
    {"prompt": [5, 10 ** 9], "max_tokens": 1},
    {"prompt": "hi", "stop_token_ids": [10 ** 9], "min_tokens": 1, "max_tokens": 2},
)
SLOW_HEAD = b"POST /v1/completions HTTP/1.1\r\nhost: lab\r\nx-slow: "  # never finished


def _check(duration_s: float, threads: int) -> None:
    if not duration_s > 0:
        raise LabError(f"duration_s must be > 0, got {duration_s}")
    if not isinstance(threads, int) or threads < 1:
        raise LabError(f"threads must be an integer >= 1, got {threads!r}")


def _flood(action: str, base_url: str, duration_s: float, threads: int,
           send: Callable[[httpx.Client, int], int], extra: dict) -> dict:
    """`threads` senders calling `send(client, n)` back to back for `duration_s`; statuses counted."""
    _check(duration_s, threads)
    statuses: Counter = Counter()
    lock, stop, numbers = threading.Lock(), threading.Event(), itertools.count()

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            while not stop.is_set():
                try:
                    status: int | str = send(client, next(numbers))
                except httpx.HTTPError:
                    status = "connection_error"
                    time.sleep(0.05)  # a refused connection answers at once: do not spin
                with lock:
                    statuses[str(status)] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=run, name=f"{action}-{i}", daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(duration_s)
    stop.set()
    for worker in workers:
        worker.join(35.0)  # at most one request's timeout
    stopped = time.monotonic()
    record = FaultRecord(action, base_url, "load", {**extra, "duration_s": duration_s, "threads": threads})
    return {**record.as_dict(), "started_monotonic_s": started, "stopped_monotonic_s": stopped,
            "sent": sum(statuses.values()), "statuses": dict(statuses)}


def flood_wrong_keys(base_url: str, duration_s: float, threads: int = 6, distinct: bool = True,
                     max_tokens: int = 1) -> dict:
    def send(client: httpx.Client, n: int) -> int:
        # distinct: a new wrong key each time (a guesser), which no cache of refused keys helps with.
        headers = {"Authorization": f"Bearer sk-not-issued-{n if distinct else 0}"}
        body = {"prompt": "hi", "max_tokens": max_tokens}
        return client.post("/v1/completions", json=body, headers=headers).status_code

    return _flood("flood_wrong_keys", base_url, duration_s, threads, send, {"distinct": distinct})


def flood_poison(base_url: str, api_key: str, duration_s: float, threads: int = 6,
                 bodies: list[dict] | None = None) -> dict:
    if not api_key:
        raise LabError("api_key: the flood comes from one real key (e.g. the batch tier's)")
    bodies = list(POISON_BODIES if bodies is None else bodies)
    if not bodies or not all(isinstance(b, dict) for b in bodies):
        raise LabError(f"bodies: a non-empty list of request bodies (JSON objects), got {bodies!r}")

    def send(client: httpx.Client, n: int) -> int:
        body = bodies[n % len(bodies)]  # no "model": a replica then serves its own, so the 400 is the poison's
        return client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}).status_code

    return _flood("flood_poison", base_url, duration_s, threads, send, {"bodies": len(bodies)})


def hold_idle_connections(base_url: str, duration_s: float, count: int = 1000) -> dict:
    _check(duration_s, 1)
    if not isinstance(count, int) or count < 1:
        raise LabError(f"count must be an integer >= 1, got {count!r}")
    parts = urlsplit(base_url)
    if parts.hostname is None:
        raise LabError(f"base_url must be like http://127.0.0.1:8000, got {base_url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if raise_fd_limit() < count + 256:  # the drill's own clients need descriptors too
        raise LabError(f"count {count}: this process may open only {raise_fd_limit()} files; raise `ulimit -n`")
    sockets: list[socket.socket] = []
    refused = 0
    started = time.monotonic()
    try:
        for i in range(count):
            try:
                sock = socket.create_connection((parts.hostname, port), timeout=5)
                if i % 2:
                    sock.sendall(SLOW_HEAD)
                sockets.append(sock)
            except OSError:
                refused += 1
        time.sleep(max(0.0, duration_s - (time.monotonic() - started)))
    finally:
        for sock in sockets:
            sock.close()
    stopped = time.monotonic()
    record = FaultRecord("hold_idle_connections", base_url, "load", {"count": count, "duration_s": duration_s})
    return {**record.as_dict(), "started_monotonic_s": started, "stopped_monotonic_s": stopped,
            "opened": len(sockets), "refused": refused}
