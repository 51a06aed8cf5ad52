"""The forwarded routes on the bare ASGI interface: POST /v1/completions and /v1/chat/completions.

Contract: `Forwarder(gateway)` is the ASGI callable of the two routes in `FORWARDED` (the app sends
every other path to FastAPI). A request goes: key -> tier (401; slow key checks off the loop, see
`lab.gateway.key_checks`) -> body (413 over the limit, 400 when not JSON or nested too deep) -> token
buckets (429 + Retry-After) -> priority queue (504 with tier and waited_ms past the tier's timeout) ->
replica (502/503 when none answers within the tier's budgets) -> the replica's status, headers and bytes,
streamed as they arrive. Every refusal is an OpenAI-shaped JSON error (`GatewayError.render`).
A stream whose replica goes silent past the tier's stall budget, or breaks, ends with an SSE error
event and is held against the replica (passive health); one that ends without `data: [DONE]` (it gets
an `upstream_incomplete` error event appended) or carries an error event (`lab.gateway.sse_outcome`)
counts as an `error` of its tier, never `ok`.
Once past the body, a watcher waits for the client's `http.disconnect`: a client that leaves (while
queued, while the replica works, mid-stream) interrupts its request, and the upstream connection is
dropped so the replica aborts. A request preempted by a higher tier (`lab.gateway.queue`) is
interrupted the same way and told so: a 503 `preempted` before the first byte, an SSE error event
after it. However it ends, its slot and outstanding work are given back (`Gateway.finish`).

Why not FastAPI here: a StreamingResponse costs ~1.7 ms CPU per request on this 2-core machine
(anyio task groups, middleware stack), more than the gateway's whole latency budget; this path
writes `http.response.start` / `http.response.body` itself. Non-streaming replies with a
Content-Length (a JSON completion) are read whole and sent in one write with their length.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from lab.gateway.auth import bearer_token
from lab.gateway.errors import GatewayError, unauthorized
from lab.gateway.openai_body import ClientRequest, parse_body
from lab.gateway.proxy import UPSTREAM_ERRORS, Upstream
from lab.gateway.queue import QueueTimeout, Ticket
from lab.gateway.sse_outcome import StreamOutcome

if TYPE_CHECKING:
    from lab.gateway.app import Gateway

FORWARDED = frozenset({"/v1/completions", "/v1/chat/completions"})
_WANTED_HEADERS = {b"authorization": "authorization", b"api-key": "api-key", b"content-length": "content-length"}

Send = Any  # ASGI callables, untyped as in the ASGI spec
Receive = Any


async def send_error(send: Send, error: GatewayError) -> None:
    body, headers = error.render()
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than the gateway's limit of {limit} bytes",
                        "invalid_request_error", "request_too_large")


def sse_error(message: str, code: str, type_: str) -> bytes:
    payload = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class _Exchange:
    """One forwarded request's state: what ended it, whether its response started.

    `interrupt(reason)` cancels the request's task, once: the client left (`client_closed`) or a
    higher tier took its slot (`preempted`). Once the last byte is on its way, `reason` is `done`
    and nothing can interrupt it any more.
    """

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.reason = ""  # "" | client_closed | preempted | done
        self.outcome = ""  # "" (refused, counted where refused) | ok | error | client_closed | preempted
        self.started = False  # http.response.start went out

    def interrupt(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
            self.task.cancel()

    def absorb(self) -> None:
        """The cancellation was ours and is handled: let later awaits run (Python >= 3.11)."""
        uncancel = getattr(self.task, "uncancel", None)
        if uncancel is not None:
            uncancel()


async def _watch_disconnect(receive: Receive, exchange: _Exchange) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    exchange.interrupt("client_closed")


class Forwarder:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_error(send, GatewayError(405, f"{scope['path']} takes POST", "invalid_request_error",
                                                "method_not_allowed", headers={"Allow": "POST"}))
            return
        gateway = self.gateway
        arrived = gateway.clock()
        headers = {_WANTED_HEADERS[k]: v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED_HEADERS}
        try:
            key = await gateway.key_checks.lookup(bearer_token(headers))
            if key is None:
                raise unauthorized()
            tier = gateway.config.tier(key.tier)
            raw = await self._read_body(receive, headers)
            if raw is None:
                return  # the client left before sending its body: nobody to answer
            parsed = parse_body(raw, gateway.config.queue.default_max_tokens)
            self._take_tokens(key, tier.name, parsed)
        except GatewayError as error:
            await send_error(send, error)
            return
        await self._forward(scope["path"], receive, send, tier.name, tier.priority, parsed, arrived)

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        limit = self.gateway.config.proxy.max_body_bytes
        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise _too_large(limit)
        parts, size = [], 0
        while True:  # counted as it comes: a missing content-length cannot sneak past
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            parts.append(part)
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take_tokens(self, key: Any, tier: str, parsed: ClientRequest) -> None:
        gateway = self.gateway
        admission = gateway.limiter.admit(key, parsed.token_cost)
        if admission.admitted:
            return
        gateway.metrics.shed.labels(tier, admission.bucket).inc()
        if math.isinf(admission.retry_after_s):
            raise GatewayError(429, f"request of ~{parsed.token_cost} tokens exceeds the {admission.bucket} burst "
                                    f"of tier {tier!r}; lower max_tokens or the prompt", "rate_limit_error",
                               "request_too_large", tier=tier)
        retry_after = max(1, math.ceil(admission.retry_after_s))
        raise GatewayError(429, f"rate limit of tier {tier!r} reached ({admission.bucket}); retry in "
                                f"{admission.retry_after_s * 1000:.0f} ms", "rate_limit_error", "rate_limited",
                           headers={"Retry-After": str(retry_after)}, tier=tier,
                           retry_after_s=round(admission.retry_after_s, 3))

    async def _admit(self, tier: str, arrived: float, exchange: _Exchange) -> Ticket:
        gateway = self.gateway
        try:
            ticket = await gateway.queue.acquire(tier, on_preempt=lambda _: exchange.interrupt("preempted"))
        except QueueTimeout as timeout:
            gateway.metrics.tier[tier].timed_out.inc()
            raise GatewayError(504, str(timeout), "timeout_error", "queue_timeout", tier=tier,
                               waited_ms=round(timeout.waited_ms, 1), timeout_ms=timeout.timeout_ms) from None
        series = gateway.metrics.tier[tier]
        series.admitted.inc()
        series.queue_wait.observe(gateway.clock() - arrived)
        return ticket

    async def _forward(self, path: str, receive: Receive, send: Send, tier: str, priority: int,
                       parsed: ClientRequest, arrived: float) -> None:
        gateway = self.gateway
        exchange = _Exchange(asyncio.current_task())
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, exchange))
        ticket: Ticket | None = None
        upstream: Upstream | None = None
        try:
            ticket = await self._admit(tier, arrived, exchange)
            exchange.outcome = "error"  # until the replica answers
            upstream = await gateway.proxy.open(path, parsed, priority, gateway.budgets[tier])
            exchange.outcome = "client_closed"  # until the response ends or the replica breaks
            await self._relay(upstream, send, tier, arrived, exchange)
        except GatewayError as error:
            exchange.reason = exchange.reason or "done"  # the answer is decided: nothing interrupts it now
            await send_error(send, error)
        except asyncio.CancelledError:
            if exchange.reason not in ("client_closed", "preempted"):
                raise  # the server is shutting down: not ours to absorb
            exchange.absorb()
            exchange.outcome = exchange.reason
            if exchange.reason == "preempted":
                borrowed = ticket is not None and ticket.borrowed
                await self._say_preempted(send, tier, exchange, upstream, borrowed)
        finally:
            exchange.reason = exchange.reason or "done"
            watcher.cancel()
            gateway.finish(tier, ticket, upstream, exchange.outcome, arrived)

    async def _start(self, send: Send, upstream: Upstream, headers: list[tuple[bytes, bytes]],
                     exchange: _Exchange) -> None:
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        exchange.started = True

    async def _relay(self, upstream: Upstream, send: Send, tier: str, arrived: float, exchange: _Exchange) -> None:
        gateway = self.gateway
        gateway.metrics.tier[tier].ttfb.observe(gateway.clock() - arrived)  # `open` returns on the first body bytes
        if upstream.body is not None:
            body = upstream.body
            await self._start(send, upstream, [*upstream.headers(), (b"content-length", str(len(body)).encode())],
                              exchange)
            exchange.reason, exchange.outcome = "done", "ok"
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._start(send, upstream, upstream.headers(), exchange)
        stream = StreamOutcome() if upstream.is_event_stream else None
        chunk, replica = upstream.first_chunk, upstream.replica
        answers = replica.answers
        try:
            while chunk:  # as they arrive: no buffering
                if stream is not None:
                    stream.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                answers = replica.answers  # a stall counts against the replica only if it answers nobody else
                chunk = await upstream.next_chunk()
        except UPSTREAM_ERRORS as error:
            # The replica broke or went silent mid-response; nothing can be retried once bytes went out.
            # Say so: an SSE stream gets an error event (the openai SDK raises it), any other body is cut off.
            exchange.outcome = "error"
            stalled = isinstance(error, asyncio.TimeoutError)
            failure = (f"replica {upstream.replica.name!r} sent nothing for the tier's {upstream.stall_s:g} s "
                       "stall budget mid-stream" if stalled
                       else f"replica {upstream.replica.name!r} failed mid-stream: {type(error).__name__}")
            if not stalled or replica.answers == answers:
                gateway.health.record_request(replica, failure)
            if not upstream.is_event_stream:
                raise
            exchange.reason = "done"
            code = "upstream_timeout" if stalled else "upstream_broke"
            await send({"type": "http.response.body", "body": sse_error(failure, code, "upstream_error"),
                        "more_body": False})
            return
        exchange.reason = "done"
        exchange.outcome = "ok" if stream is None or stream.ok else "error"  # a cut or failed stream is no success
        tail = b""
        if stream is not None and not stream.done and not stream.error:  # cut short: tell the client, too
            tail = sse_error(f"replica {upstream.replica.name!r} ended the stream without data: [DONE]; the answer "
                             "may be incomplete", "upstream_incomplete", "upstream_error")
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _say_preempted(self, send: Send, tier: str, exchange: _Exchange, upstream: Upstream | None,
                             borrowed: bool) -> None:
        if borrowed:
            message = (f"request of tier {tier!r} was preempted: it ran on a slot borrowed above its tier's share, "
                       "and a higher tier took the slot back; retry later")
        else:
            message = (f"request of tier {tier!r} was preempted: its slot went to a higher tier that would "
                       "otherwise have missed its deadline; retry later")
        if not exchange.started:
            await send_error(send, GatewayError(503, message, "service_unavailable", "preempted", tier=tier))
        elif upstream is not None and upstream.is_event_stream:
            await send({"type": "http.response.body", "body": sse_error(message, "preempted", "service_unavailable"),
                        "more_body": False})
        else:
            raise ConnectionAbortedError(message)  # a JSON body cut short: dropping the connection says so
