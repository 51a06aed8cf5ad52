"""`HFBackend`: the "native deployment" baseline — transformers' `generate()` behind our HTTP layer.

Contract (a `ServingBackend`, see `backend.py`):
- Requests queue FCFS (the `priority` field is ignored) and one worker thread runs them in
  *static batches*: it takes up to `batch_size` requests from the head of the queue (whatever is
  waiting, without waiting for more), runs them to the end with one `generate()` call
  (`hf_generate.run_batch`), then takes the next batch. No paging, no continuous batching: a
  request that arrives meanwhile waits for the whole batch. `batch_size=1` is plain
  `generate()` per request.
- Tokens stream as they are produced (one `Delta` per token, text through the engine's
  detokenizer); `queue_time_s` is arrival to the start of the request's batch.
- `stats()`: running = unfinished requests of the current batch, waiting = queued requests;
  `kv_cache_usage` is 0.0 (there is no block pool to fill: HF's DynamicCache grows per batch).
- A prompt the engine would refuse (empty, no room for an output token in the context, token ids
  outside the vocabulary: `lab.engine.prompt_checks`, the engine's rules and wording), or a
  request id already live, is refused (`RequestRefused`) before the first delta, so one bad
  prompt never fails the batch it would have joined (stop token ids outside the vocabulary too:
  `check_sampling_ids`); a batch whose `generate()` raises fails each of its requests with
  `BackendError`; `abort` ends a queued request at once and a running one with its next delta
  (its batch keeps the slot until the batch ends).
- Logprobs come from the engine's `Sampler` on the scores `generate()` hands the logits processor
  (the raw logits), as in the engine. `stall_reason` is always None: a static batch may
  legitimately run for minutes without a sign of life this backend could check.
This module is torch-free: `load` imports the torch side (`hf_model`, `hf_generate`) lazily.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

from lab.engine.sampling_params import SamplingParams
from lab.engine.sequence import FinishReason
from lab.server.backend import BackendError, BackendStats, Delta, RequestRefused, TokenizerLike
from lab.server.hf_request import HFRequest, stream
from lab.engine.prompt_checks import check_prompt_ids, check_sampling_ids

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs

logger = logging.getLogger(__name__)

SHUTDOWN_JOIN_S = 30.0  # how long shutdown waits for the running batch to see its aborts
RunBatch = Callable[[list[HFRequest]], None]  # runs requests until each has finished


class HFBackend:
    def __init__(self, run_batch: RunBatch, tokenizer: TokenizerLike, model_name: str, max_model_len: int,
                 vocab_size: int, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.vocab_size = vocab_size
        self._run_batch = run_batch
        self._cond = threading.Condition()  # guards the three fields below
        self._pending: deque[HFRequest] = deque()
        self._running: list[HFRequest] = []
        self._live: dict[str, HFRequest] = {}  # queued or running, by request id
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="hf-generate", daemon=True)
        self._worker.start()

    @classmethod
    def load(cls, engine_args: EngineArgs, served_model_name: str, batch_size: int = 1) -> HFBackend:
        from lab.server.hf_generate import run_batch  # torch + transformers: only once a model really loads
        from lab.server.hf_model import load_hf_model

        model = load_hf_model(engine_args)
        return cls(partial(run_batch, model), model.tokenizer, served_model_name, model.max_model_len,
                   model.vocab_size, batch_size)

    # ---- the ServingBackend protocol ------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str,
                       priority: int = 0) -> AsyncIterator[Delta]:
        try:
            check_prompt_ids(prompt_token_ids, self.vocab_size, self.max_model_len)
            check_sampling_ids(params, self.vocab_size)
        except ValueError as exc:
            raise RequestRefused(str(exc)) from None
        request = HFRequest.start(request_id, prompt_token_ids, params, self.tokenizer)
        self._submit(request)
        async for item in stream(request, self.abort):  # a consumer that left: drop it from the queue or its batch
            yield item

    def abort(self, request_id: str) -> None:
        with self._cond:
            request = self._live.get(request_id)
            if request is None:
                return
            if request in self._pending:
                self._pending.remove(request)
                del self._live[request_id]
        request.finish(FinishReason.ABORT)  # a running row is skipped from its next step on

    @property
    def stall_reason(self) -> str | None:
        return None

    @property
    def degraded_reason(self) -> str | None:
        return None  # transformers' generate() gives no cheap sign of non-finite logits

    @property
    def dead_reason(self) -> str | None:
        if self._closed:
            return "the engine is shut down"
        return None if self._worker.is_alive() else "the generate() worker thread has ended"

    def stats(self) -> BackendStats:
        with self._cond:
            running = sum(not r.finished for r in self._running)
            return BackendStats(num_requests_running=running, num_requests_waiting=len(self._pending),
                                kv_cache_usage=0.0)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            left = list(self._live.values())
            self._pending.clear()
            self._cond.notify_all()
        for request in left:
            request.finish(FinishReason.ABORT)
        self._worker.join(timeout=SHUTDOWN_JOIN_S)

    # ---- the worker -----------------------------------------------------------------------------
    def _submit(self, request: HFRequest) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("the backend is shut down")
            if request.request_id in self._live:
                raise RequestRefused(f"request id {request.request_id!r} is already in use")
            self._live[request.request_id] = request
            self._pending.append(request)
            self._cond.notify()

    def _next_batch(self) -> list[HFRequest] | None:
        """The oldest `batch_size` queued requests, once there is one; None after shutdown."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            self._running = batch
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            for request in batch:
                request.scheduled()
            try:
                self._run_batch(batch)
            except Exception as exc:  # the batch is lost; the server and later batches are not
                logger.exception("generate() failed for a batch of %d request(s)", len(batch))
                for request in batch:
                    request.fail(exc)
            for request in batch:  # defensive: every stream must end, whatever run_batch did
                request.fail(RuntimeError("the batch ended before this request finished"))
            with self._cond:
                self._running = []
                for request in batch:
                    self._live.pop(request.request_id, None)
