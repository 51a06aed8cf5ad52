"""What `lab.gateway.http_server` refuses, and when: its refusals, deadlines and file-descriptor room.

Contract: `refusal(status, message, code)` is a complete HTTP/1.1 response that closes its connection,
with a body in OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`), so the openai
SDK raises its usual exception for the server's own refusals too: 400 malformed, 408 a request's head
or body too slow, 413 a body over the limit, 431 a head over the limit, 503 too many connections.
A connection is, at any time, in one of the phases below, each with its deadline from
`ServerConfig`: IDLE (no byte of a next request yet: `keepalive_timeout_s`, closed in silence), HEAD
(a request's first byte came, its headers not all: `header_timeout_s`, then 408), BODY (its headers came
and it runs, its body not all: `body_timeout_s` from the end of the headers, then 408 if the response
has not started), BUSY (the app answers: no deadline of the server's), or LINGER (answered for good while
the client may still be sending: what it sends is dropped for `LINGER_S`, `LINGER_BYTES` at most, then the
connection closes, so that a reset does not discard the answer). `sweep_interval_s(config)` is
how often deadlines are checked. `raise_fd_limit()` lifts the process's soft RLIMIT_NOFILE to its hard
limit, and `connection_room(max_connections)` is the cap the server can keep with the descriptors it has
(`FD_RESERVE` left for upstream connections, probes and logs).

Why a sweep, not a timer per connection: one pass a second over a thousand connections costs less than
arming and cancelling timers on every request of the hot path, and deadlines of seconds need no better.
"""

from __future__ import annotations

import json
import logging
import resource
from http import HTTPStatus

from lab.gateway.config import ServerConfig

log = logging.getLogger("lab.gateway.http_server")

IDLE, HEAD, BODY, BUSY, LINGER = "idle", "head", "body", "busy", "linger"
LINGER_S = 2.0
LINGER_BYTES = 1 << 20
FD_RESERVE = 1024  # descriptors kept for everything but client connections
_TYPES = {400: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
          431: "invalid_request_error", 500: "internal_server_error", 503: "service_unavailable"}


def refusal(status: int, message: str, code: str, type_: str | None = None,
            headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = json.dumps({"error": {"message": message, "type": type_ or _TYPES.get(status, "invalid_request_error"),
                                 "param": None, "code": code}}).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n").encode() + body


def sweep_interval_s(config: ServerConfig) -> float:
    """A fifth of the shortest deadline, between 50 ms and 1 s: a deadline is met to within that."""
    shortest = min(config.header_timeout_s, config.body_timeout_s, config.keepalive_timeout_s)
    return min(1.0, max(0.05, shortest / 5))


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one (as Go's runtime does); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-files limit from %s to %s: %s", soft, target, error)
    return soft


def connection_room(max_connections: int) -> int:
    """`max_connections`, or fewer when the open-files limit cannot hold them plus `FD_RESERVE`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or max_connections + FD_RESERVE <= soft:
        return max_connections
    room = max(1, soft - FD_RESERVE) if soft > 2 * FD_RESERVE else max(1, soft // 2)
    log.warning("server.max_connections %d does not fit the open-files limit %d (less %d kept for upstream "
                "connections): serving at most %d connections; raise `ulimit -n`", max_connections, soft,
                FD_RESERVE, room)
    return room
