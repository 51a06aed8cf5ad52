"""`AsyncLLM`: the engine behind a server. `generate()` is an async iterator of deltas.

The blocking step loop runs on its own thread so the event loop stays free to accept and
stream requests. Commands (add, abort) cross to that thread through a queue and are applied
between steps, so the engine's state is only ever touched by one thread. A consumer that stops
iterating (a client that disconnected) aborts its request, which frees its KV blocks.
A request the engine ended because a step failed on it alone raises `RequestFailedError` in its
own stream; the others go on. `stalled_for_s` says how long the step loop has not turned (it turns
at least every `IDLE_WAIT_S` while idle), so a server can tell a hung loop from an idle one.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from lab.engine.args import EngineArgs
from lab.engine.engine import LLMEngine
from lab.engine.outputs import RequestFailedError, RequestOutput
from lab.engine.sampling_params import SamplingParams
from lab.engine.step_gaps import StepGaps

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # idle: longest wait for a command before the loop turns again


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # RequestOutput items, or an Exception that ends the stream


class AsyncLLM:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._streams: dict[str, _Stream] = {}
        self._ids = itertools.count()
        self._stopping = threading.Event()
        self._last_turn = time.monotonic()  # written by the loop thread only
        self.step_gaps = StepGaps()  # the longest gap between two steps with requests in flight (/metrics)
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_args(cls, args: EngineArgs) -> "AsyncLLM":
        return cls(LLMEngine(args))

    # ---- public API (event-loop side) --------------------------------------------------------
    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        *,
        priority: int = 0,
        deadline: float | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Yield one `RequestOutput` per step that changed the request; the last has finished=True.

        Raises ValueError before the first item when the engine refuses the request.
        """
        request_id = request_id or f"req-{next(self._ids)}"
        loop = asyncio.get_running_loop()
        stream = _Stream(loop, asyncio.Queue())
        added: concurrent.futures.Future = concurrent.futures.Future()

        def add() -> None:
            try:
                self.engine.add_request(request_id, prompt, params, priority=priority, deadline=deadline)
            except Exception as exc:  # refused: report to the caller, engine untouched
                added.set_exception(exc)
                return
            self._streams[request_id] = stream
            added.set_result(None)

        self._submit(add)
        try:
            await asyncio.wrap_future(added)
        except asyncio.CancelledError:  # the consumer left during admission: the add may still apply
            self.abort(request_id)
            raise
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Cancel a request and free its KV blocks; unknown or finished ids are ignored.

        A consumer still iterating gets a last output with finish_reason "abort" (a server that
        aborts on a drain timeout ends its streams cleanly); a consumer that left gets nothing.
        """

        def do_abort() -> None:
            out = self.engine.abort_request(request_id)
            if out is None:
                self._streams.pop(request_id, None)
            else:
                self._deliver(request_id, out)  # finished: also drops the stream

        self._submit(do_abort)

    def stats(self) -> dict[str, object]:
        """A snapshot for /metrics (reads are racy by a step at most, which is fine for gauges)."""
        sched = self.engine.scheduler
        return {
            "num_requests_running": sched.num_running,
            "num_requests_waiting": sched.num_waiting,
            "kv_cache_usage_perc": self.engine.kv_cache_usage,
            "step_gaps": self.step_gaps.snapshot(),
        }

    @property
    def dead_reason(self) -> str | None:
        """None while the step loop runs; else why it does not (shut down, or the thread ended)."""
        if self._stopping.is_set():
            return "the engine is shut down"
        return None if self._thread.is_alive() else "the engine loop thread has ended"

    @property
    def stalled_for_s(self) -> float:
        """Seconds since the step loop last turned (about 0 while it runs or idles normally)."""
        return time.monotonic() - self._last_turn

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._commands.put(lambda: None)  # wake the loop
        self._thread.join(timeout_s)
        if not self._thread.is_alive():  # the loop no longer steps: tensor-parallel workers may stop
            self.engine.shutdown()

    # ---- engine thread ----------------------------------------------------------------------
    def _submit(self, command: Callable[[], None]) -> None:
        if self._stopping.is_set():
            raise RuntimeError("the engine is shut down")
        self._commands.put(command)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._last_turn = time.monotonic()
            block = not self.engine.has_unfinished_requests()
            try:
                self._apply(self._commands.get(block=block, timeout=IDLE_WAIT_S if block else None))
                while True:  # apply every pending command before the next step
                    self._apply(self._commands.get_nowait())
            except queue.Empty:
                pass
            if self.engine.has_unfinished_requests():
                self._step()
                self.step_gaps.step_ended(self.engine.has_unfinished_requests())

    def _apply(self, command: Callable[[], None]) -> None:
        try:
            command()
        except Exception:  # one bad command must not stop the loop that serves everyone
            logger.exception("engine command failed")

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # a failed step fails its requests, not the server
            for request_id in list(self._streams):
                self.engine.abort_request(request_id)
                self._deliver(request_id, RuntimeError(f"engine step failed: {exc!r}"))
            return
        for out in outputs:
            self._deliver(out.request_id, out if out.error is None else RequestFailedError(out.error))

    def _deliver(self, request_id: str, item: RequestOutput | Exception) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        if isinstance(item, Exception) or item.finished:
            self._streams.pop(request_id, None)
        stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
