"""`EngineCoreBackend`: the `ServingBackend` over an engine core in its own process (`--engine-core process`).

Contract (beyond `backend.py`'s):
- `load(engine_args, served_model_name)` spawns the core (`lab.engine.core_client`), waits until
  it has built the engine and loads the same tokenizer here, for prompts and chat templates.
  A core that cannot load raises `EngineCoreLoadError` naming the original error.
- The reader thread hands each whole `StepBatch` to the event loop with one
  `call_soon_threadsafe`; `stats()` is the snapshot of the latest batch (no round trip).
- Coalescing: when a consumer wakes up to several outputs of its request, they become one
  `Delta` (text and token ids concatenated, the last output's counts and finish reason), so a
  loaded server writes one SSE event per wake-up rather than one per token.
- A refused add is `RequestRefused` before the first delta; a failed step is `BackendError`.
  If the core dies, every live stream ends with a `BackendError` naming its exit status, and so
  does every later `generate` (the HTTP layer answers 500 `engine_error`, as for any failure).
- The event loop is the first caller's (a server has one); the backend serves that loop only.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from lab.engine.core_client import EngineCoreClient
from lab.engine.core_messages import AbortRequest, AddRequest, CoreOutput, StepBatch
from lab.engine.presets import PRESETS
from lab.engine.sampling_params import SamplingParams
from lab.engine.tokenizer_loading import load_tokenizer
from lab.server.backend import BackendError, BackendStats, Delta, RequestRefused, TokenizerLike

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs


class _Stream:
    """One request's undelivered outputs (or the exception that ends it), and a wake-up."""

    __slots__ = ("items", "ready")

    def __init__(self) -> None:
        self.items: list[CoreOutput | Exception] = []
        self.ready = asyncio.Event()

    def put(self, item: CoreOutput | Exception) -> None:
        self.items.append(item)
        self.ready.set()

    async def take(self) -> list[CoreOutput | Exception]:
        await self.ready.wait()
        self.ready.clear()
        items, self.items = self.items, []
        return items


class EngineCoreBackend:
    def __init__(self, client: EngineCoreClient, max_model_len: int, tokenizer: TokenizerLike,
                 model_name: str) -> None:
        self._client = client
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.tokenizer = tokenizer
        self._streams: dict[str, _Stream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats = BackendStats(0, 0, 0.0)
        self._dead: str | None = None  # why the core is gone; set once, from the reader thread
        client.listen(self._on_batch, self._on_exit)

    @classmethod
    def load(cls, engine_args: EngineArgs, served_model_name: str) -> EngineCoreBackend:
        client = EngineCoreClient()
        client.spawn(engine_args)
        try:
            # The tokenizer loads here while the core builds the engine (a second or so saved).
            guess = None if engine_args.model in PRESETS else str(Path(engine_args.model))
            tokenizer = load_tokenizer(engine_args.tokenizer, None if guess is None else Path(guess))
            ready = client.wait_ready()
            if ready.checkpoint_dir != guess:  # the core's loader decided otherwise: take its word
                checkpoint_dir = None if ready.checkpoint_dir is None else Path(ready.checkpoint_dir)
                tokenizer = load_tokenizer(engine_args.tokenizer, checkpoint_dir)
        except BaseException:
            client.shutdown()
            raise
        return cls(client, ready.max_model_len, tokenizer, served_model_name)

    @property
    def core_pid(self) -> int | None:
        return self._client.pid

    # ---- ServingBackend (event-loop side) ----------------------------------------------------------
    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncIterator[Delta]:
        if self._dead is not None:
            raise BackendError(self._dead)
        if request_id in self._streams:
            raise RequestRefused(f"request id {request_id!r} is already in use")
        self._loop = asyncio.get_running_loop()
        stream = _Stream()
        self._streams[request_id] = stream
        self._client.send(AddRequest(request_id, list(prompt_token_ids), params, priority))
        finished = started = False
        try:
            while not finished:
                items = await stream.take()
                outputs = [item for item in items if not isinstance(item, Exception)]
                if outputs:
                    delta = _merge(outputs)
                    started, finished = True, delta.finished
                    yield delta
                errors = [item for item in items if isinstance(item, Exception)]
                if errors:  # always the stream's last item
                    error = errors[0]
                    if started and isinstance(error, RequestRefused):
                        raise BackendError(str(error))
                    raise error
        finally:
            # The consumer left (or the request failed): free its KV in the core, no awaits here.
            if not finished and self._streams.pop(request_id, None) is not None and self._dead is None:
                self._client.send(AbortRequest(request_id))

    def abort(self, request_id: str) -> None:
        if request_id in self._streams and self._dead is None:
            self._client.send(AbortRequest(request_id))  # its stream ends with finish_reason "abort"

    @property
    def dead_reason(self) -> str | None:
        return self._dead

    def stats(self) -> BackendStats:
        return self._stats

    def shutdown(self) -> None:
        self._client.shutdown()

    # ---- reader thread -> event loop --------------------------------------------------------------
    def _on_batch(self, batch: StepBatch) -> None:
        stats = batch.stats
        self._stats = BackendStats(stats.num_requests_running, stats.num_requests_waiting, stats.kv_cache_usage_perc)
        if (batch.outputs or batch.failures) and self._loop is not None:
            self._call_in_loop(self._dispatch, batch)

    def _on_exit(self, reason: str, expected: bool) -> None:
        self._dead = "the engine core is shut down" if expected else reason
        self._stats = BackendStats(0, 0, 0.0)
        if self._loop is not None:
            self._call_in_loop(self._fail_all)

    def _call_in_loop(self, callback, *args) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: the server is gone, nobody is waiting

    def _dispatch(self, batch: StepBatch) -> None:
        streams = self._streams
        for out in batch.outputs:
            stream = streams.get(out.request_id)
            if stream is None:
                continue  # its consumer left; the abort is on its way
            if out.finish_reason is not None:
                del streams[out.request_id]
            stream.put(out)
        for failure in batch.failures:
            stream = streams.pop(failure.request_id, None)
            if stream is not None:
                stream.put(RequestRefused(failure.message) if failure.refused else BackendError(failure.message))

    def _fail_all(self) -> None:
        assert self._dead is not None
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.put(BackendError(self._dead))


def _merge(outputs: list[CoreOutput]) -> Delta:
    last = outputs[-1]
    if len(outputs) == 1:
        text, token_ids = last.new_text, tuple(last.new_token_ids)
    else:  # coalesced: several steps' outputs reach the consumer at once
        text = "".join(o.new_text for o in outputs)
        token_ids = tuple(t for o in outputs for t in o.new_token_ids)
    return Delta(
        text=text,
        token_ids=token_ids,
        num_output_tokens=last.num_output_tokens,
        finish_reason=last.finish_reason,
        queue_time_s=last.queue_time_s,
        num_preemptions=last.num_preemptions,
    )
