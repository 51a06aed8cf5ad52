"""The backend streams of one HTTP request's choices (n per prompt, prompts in order), read as one.

Contract of `ChoiceStreams(backend, gen, request_id)`:
- `engine_ids[index]`: each choice's engine request id: `request_id` itself when there is one
  choice, else `{request_id}-{index}`; what the lifecycle tracks and `backend.abort` takes.
- `start()` opens every choice's backend stream (nothing is sent to the engine before it).
- `await first_deltas()`: the first delta of every choice, awaited together; the first that
  raises (a refusal, a failure) cancels the others (whose streams then abort their requests) and
  propagates, so one refused choice is one refused request.
- `async for index, delta in rest()`: the later deltas of the unfinished choices in arrival order.
  One choice is read directly; several are read by one task each into a queue. A stream that
  ends without a finished delta raises `BackendError`.
- `close()` cancels the readers that still run; synchronous, so it is safe in a `finally`.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from lab.server.backend import BackendError, Delta, ServingBackend
from lab.server.sampling import GenerationInput


class ChoiceStreams:
    def __init__(self, backend: ServingBackend, gen: GenerationInput, request_id: str) -> None:
        self._backend = backend
        self._gen = gen
        single = len(gen.choices) == 1
        self.engine_ids = {c.index: request_id if single else f"{request_id}-{c.index}" for c in gen.choices}
        self._streams: dict[int, AsyncIterator[Delta]] = {}
        self._firsts: dict[int, Delta] = {}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for c in self._gen.choices:
            self._streams[c.index] = self._backend.generate(c.prompt_token_ids, c.params, self.engine_ids[c.index],
                                                            self._gen.priority)

    async def first_deltas(self) -> dict[int, Delta]:
        if len(self._streams) == 1:
            [(index, stream)] = self._streams.items()
            self._firsts = {index: await _next(stream)}
            return self._firsts
        tasks = {index: asyncio.ensure_future(_next(s)) for index, s in self._streams.items()}
        self._tasks = list(tasks.values())
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                self.close()
                raise task.exception()
        self._firsts = {index: task.result() for index, task in tasks.items()}
        return self._firsts

    async def rest(self) -> AsyncIterator[tuple[int, Delta]]:
        live = {index for index, delta in self._firsts.items() if not delta.finished}
        if not live:
            return
        if len(self._streams) == 1:
            [(index, stream)] = self._streams.items()
            delta = self._firsts[index]
            while not delta.finished:
                delta = await _next(stream)
                yield index, delta
            return
        queue: asyncio.Queue[tuple[int, Delta | Exception]] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(_read(index, self._streams[index], queue)) for index in sorted(live)]
        while live:
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item.finished:
                live.discard(index)
            yield index, item

    def close(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()  # its backend stream's finally aborts the request


async def _next(stream: AsyncIterator[Delta]) -> Delta:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        raise BackendError("the backend ended the request without any output") from None


async def _read(index: int, stream: AsyncIterator[Delta], queue: asyncio.Queue) -> None:
    try:
        while True:
            delta = await _next(stream)
            queue.put_nowait((index, delta))
            if delta.finished:
                return
    except Exception as exc:  # handed to the consumer, which fails the whole answer
        queue.put_nowait((index, exc))
