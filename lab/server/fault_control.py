"""`FaultControl`: the server's side of the fault commands it sends its engine core: a request, then a reply.

Contract (`core_backend.EngineCoreBackend.fault_control`, used by `faults.py`'s routes, and its
`reload_control`, used by `reload.py`'s: the same request-reply over the core's pipe):
- `await control.call(make)` sends `make(command_id)` (an `ArmFault`, `ClearFaults` or `ShowFaults` of
  `lab.engine.core_messages`, or a `ReloadWeights`) through `send` and returns the core's reply for that id
  (a `FaultReply`, a `ReloadReply`).
- The core answers between steps, so a core whose step hangs answers nothing until the hang ends; a reply
  that does not come within `timeout_s` raises `FaultTimeout` (a `ClearFaults` ends an injected hang, so
  its reply comes at once). The command itself stays sent: a late reply is dropped.
- `resolve(reply)` may be called from any thread (the core client's reader); `close(reason)` when the core is
  gone: waiting and later calls raise `FaultChannelClosed(reason)`.
Torch-free, like the rest of the server process.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable

from lab.engine.core_messages import FaultCommand, FaultReply

FAULT_REPLY_TIMEOUT_S = 10.0  # a healthy core answers within a step; arming oom allocate takes about a second


class FaultTimeout(RuntimeError):
    """The engine core did not answer a fault command in time (its step loop is busy or hung)."""


class FaultChannelClosed(RuntimeError):
    """The engine core is gone: no fault command can reach it."""


class FaultControl:
    def __init__(self, send: Callable[[FaultCommand], None], timeout_s: float = FAULT_REPLY_TIMEOUT_S,
                 busy_hint: str = "an injected hang_step holds it until its duration ends or a clear") -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._send = send
        self._timeout_s = timeout_s
        self._busy_hint = busy_hint
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # resolve() runs on the reader thread, call() on the event loop
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._closed: str | None = None

    async def call(self, make: Callable[[int], FaultCommand]) -> FaultReply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            if self._closed is not None:
                raise FaultChannelClosed(self._closed)
            command_id = next(self._ids)
            self._waiting[command_id] = (loop, future)
        try:
            self._send(make(command_id))
            reply = await asyncio.wait_for(future, self._timeout_s)
        except asyncio.TimeoutError:
            raise FaultTimeout(f"the engine core did not answer within {self._timeout_s:g} s: its step loop is busy "
                               f"or hung ({self._busy_hint})") from None
        finally:
            with self._lock:
                self._waiting.pop(command_id, None)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def resolve(self, reply: FaultReply) -> None:
        with self._lock:
            waiting = self._waiting.pop(reply.command_id, None)
        if waiting is not None:
            _settle(*waiting, reply)

    def close(self, reason: str) -> None:
        with self._lock:
            self._closed = reason
            waiting, self._waiting = list(self._waiting.values()), {}
        for loop, future in waiting:
            _settle(loop, future, FaultChannelClosed(reason))


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future, value: FaultReply | Exception) -> None:
    def settle() -> None:
        if not future.done():  # timed out meanwhile: nobody waits for it
            future.set_result(value)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: the server is gone, nobody is waiting
