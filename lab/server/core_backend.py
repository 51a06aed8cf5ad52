"""`EngineCoreBackend`: the `ServingBackend` over an engine core in its own process (`--engine-core process`).

Contract (beyond `backend.py`'s):
- `load(engine_args, served_model_name, ..., emulate_mig)` spawns the core (`emulate_mig`: a MIG profile it
  emulates; `partition` is then "emulated <profile>") (`lab.engine.core_client`), waits until
  it has built the engine and loads the same tokenizer here, for prompts and chat templates.
  A core that cannot load raises `EngineCoreLoadError` naming the original error.
- The reader thread hands each whole `StepBatch` to the event loop with one
  `call_soon_threadsafe`; `stats()` is the snapshot of the latest batch (no round trip).
- Coalescing: when a consumer wakes up to several outputs of its request, they become one
  `Delta` (text and token ids concatenated, the last output's counts and finish reason), so a
  loaded server writes one SSE event per wake-up rather than one per token.
- A refused add is `RequestRefused` before the first delta; a request the core's step failed on
  alone is `RequestFailed`; a failed step is `BackendError`.
  If the core dies, every live stream ends with a `BackendError` naming its exit status, and so
  does every later `generate` (the HTTP layer answers 500 `engine_error`, as for any failure).
- Hung core: the core sends a batch at least every `HEARTBEAT_S`, even idle; when nothing has
  come for `iteration_timeout_s` (vLLM's `VLLM_ENGINE_ITERATION_TIMEOUT_S`), `stall_reason` names
  the silence (the server answers 503) until the next batch arrives. Live requests keep waiting.
- The event loop is the first caller's (a server has one); the backend serves that loop only.
- `degraded_reason`: the latest batch's word on the engine's output (non-finite logits), else None.
- `fault_control` (`lab.server.fault_control`) carries fault commands to the core and their replies back
  (the reader thread hands a `FaultReply` to it); the routes exist only with `--enable-fault-injection`.
- `reload_control` carries hot reloads (`ReloadWeights`) and their first `ReloadReply`; `weights`
  (`lab.server.reload.WeightsStatus`) is the live version, from every batch's stats, and the reloads' records.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from lab.engine.core_client import EngineCoreClient
from lab.engine.core_messages import (
    AbortRequest, AddRequest, CoreOutput, FaultReply, ReloadReply, RequestFailure, StepBatch,
)
from lab.engine.presets import PRESETS
from lab.engine.sampling_params import SamplingParams
from lab.engine.tokenizer_loading import load_tokenizer
from lab.server.backend import BackendError, BackendStats, Delta, RequestFailed, RequestRefused, TokenizerLike
from lab.server.fault_control import FaultControl
from lab.server.reload import RELOAD_REPLY_TIMEOUT_S, WeightsStatus
from lab.server.limits import ENGINE_ITERATION_TIMEOUT_S

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
                 model_name: str, *, vocab_size: int,
                 iteration_timeout_s: float = ENGINE_ITERATION_TIMEOUT_S, weights_version: str = "") -> None:
        if iteration_timeout_s <= 0:
            raise ValueError(f"iteration_timeout_s must be > 0, got {iteration_timeout_s}")
        self._client = client
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self._iteration_timeout_s = iteration_timeout_s
        self._last_heard = time.monotonic()  # the latest batch's arrival; written by the reader thread
        self._streams: dict[str, _Stream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats = BackendStats(0, 0, 0.0)
        self._dead: str | None = None  # why the core is gone; set once, from the reader thread
        self._degraded: str | None = None  # the latest batch's stats.degraded
        self.fault_control = FaultControl(client.send)
        self.reload_control = FaultControl(client.send, RELOAD_REPLY_TIMEOUT_S, "a reload reads and checks a "
                                           "whole checkpoint before it answers; GET /admin/reload shows its progress")
        self.weights = WeightsStatus(weights_version)
        self.partition: str | None = None  # set by load(): the core's CoreReady.partition
        client.listen(self._on_batch, self._on_exit)

    @classmethod
    def load(cls, engine_args: EngineArgs, served_model_name: str,
             iteration_timeout_s: float = ENGINE_ITERATION_TIMEOUT_S,
             emulate_mig: str | None = None) -> EngineCoreBackend:
        client = EngineCoreClient()
        client.spawn(engine_args, emulate_mig)
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
        backend = cls(client, ready.max_model_len, tokenizer, served_model_name, vocab_size=ready.vocab_size,
                      iteration_timeout_s=iteration_timeout_s, weights_version=ready.weights_version)
        backend.partition = ready.partition  # "emulated 1g.10gb" (--emulate-mig), else None
        return backend

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

    @property
    def stall_reason(self) -> str | None:
        silent_s = time.monotonic() - self._last_heard
        if self._dead is not None or silent_s <= self._iteration_timeout_s:
            return None
        return (f"the engine core process (pid {self._client.pid}) has not answered for {silent_s:.1f}s "
                f"(limit {self._iteration_timeout_s:g}s): hung or stopped")

    @property
    def degraded_reason(self) -> str | None:
        return None if self._dead is not None else self._degraded

    def stats(self) -> BackendStats:
        return self._stats

    def shutdown(self) -> None:
        self._client.shutdown()

    # ---- reader thread -> event loop --------------------------------------------------------------
    def _on_batch(self, batch: StepBatch | FaultReply | ReloadReply) -> None:
        self._last_heard = time.monotonic()
        if isinstance(batch, FaultReply):  # sent by the loop between steps: it turns
            self._degraded = batch.degraded  # before the caller hears the answer: /health agrees with it
            self.fault_control.resolve(batch)
            return
        if isinstance(batch, ReloadReply):
            self.weights.saw(batch.record)  # before the caller hears it: /v1/models and /metrics agree
            self.reload_control.resolve(batch)  # a drain's later `promoted` finds nobody waiting: fine
            return
        stats = batch.stats
        self._degraded = stats.degraded
        self.weights.update(stats.weights_version, stats.weights_generation, stats.reloading)
        self._stats = BackendStats(stats.num_requests_running, stats.num_requests_waiting, stats.kv_cache_usage_perc,
                                   stats.step_gaps)
        if (batch.outputs or batch.failures) and self._loop is not None:
            self._call_in_loop(self._dispatch, batch)

    def _on_exit(self, reason: str, expected: bool) -> None:
        self._dead = "the engine core is shut down" if expected else reason
        self._stats = BackendStats(0, 0, 0.0)
        self.fault_control.close(self._dead)
        self.reload_control.close(self._dead)
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
                stream.put(_failure_error(failure))

    def _fail_all(self) -> None:
        assert self._dead is not None
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.put(BackendError(self._dead))


def _failure_error(failure: RequestFailure) -> Exception:
    if failure.refused:
        return RequestRefused(failure.message)
    return RequestFailed(failure.message) if failure.alone else BackendError(failure.message)


def _merge(outputs: list[CoreOutput]) -> Delta:
    last = outputs[-1]
    if len(outputs) == 1:
        text, token_ids, logprobs = last.new_text, tuple(last.new_token_ids), tuple(last.new_logprobs)
    else:  # coalesced: several steps' outputs reach the consumer at once
        text = "".join(o.new_text for o in outputs)
        token_ids = tuple(t for o in outputs for t in o.new_token_ids)
        logprobs = tuple(lp for o in outputs for lp in o.new_logprobs)
    return Delta(
        text=text,
        token_ids=token_ids,
        num_output_tokens=last.num_output_tokens,
        finish_reason=last.finish_reason,
        queue_time_s=last.queue_time_s,
        num_preemptions=last.num_preemptions,
        logprobs=logprobs,
    )
