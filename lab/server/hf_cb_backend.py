"""`HFCBBackend`: the native deployment — transformers' continuous-batching manager behind our HTTP layer.

Contract (a `ServingBackend`, see `backend.py`), for `lab serve --engine hf-cb`:
- Requests go to transformers' `ContinuousBatchingManager` (`hf_cb_manager.start_manager`: paged KV
  cache, continuous batching, its FIFO scheduler; what `generate_batch` and `transformers serve`
  run) with `add_request(..., streaming=True)`; the `priority` field is ignored. A refused request
  (`hf_cb_params.manager_request`: sampled, logprobs, min_tokens; or what the engine would refuse:
  `lab.engine.prompt_checks`, or a request id already live) raises `RequestRefused` before anything
  reaches the manager.
- One pump thread reads the manager's outputs (`get_result`, as `transformers serve` does) and
  hands each new token to the request's `HFRequest`, which applies the engine's stop rules and
  streams one `Delta` per token, so both engines end a request, and cut its text, at the same
  token. The manager ends a request itself on `max_tokens` and its end tokens; a stop string ends
  it here, and the manager's request is cancelled. `queue_time_s` is the manager's own: creation
  to leaving its waiting queue.
- `abort` (and a consumer that stops iterating) ends the stream with "abort" and cancels the
  request in the manager (`cancel_request`), which frees its KV blocks at its next step.
- A request the manager fails raises `BackendError` on its stream; if the manager's generation
  thread dies, every live request fails and `dead_reason` says why.
- `stats()` is the manager's own load (`hf_cb_manager.manager_load`): its running and waiting
  requests and its paged cache's use. `stall_reason` and `degraded_reason` are None: the manager
  gives no cheap sign of either.
This module is torch-free: `load` imports the torch side (`hf_model`, `hf_cb_manager`) lazily.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from lab.engine.prompt_checks import check_prompt_ids, check_sampling_ids
from lab.engine.sampling_params import InvalidParam, SamplingParams
from lab.engine.sequence import FinishReason
from lab.server.backend import BackendError, BackendStats, Delta, RequestRefused, TokenizerLike
from lab.server.hf_cb_config import HFCBConfig
from lab.server.hf_cb_params import manager_request
from lab.server.hf_request import HFRequest, stream

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs

logger = logging.getLogger(__name__)

POLL_S = 0.1  # how long the pump waits for an output before it checks the manager is alive
SHUTDOWN_JOIN_S = 30.0  # how long shutdown waits for the manager's thread and the pump


class HFCBBackend:
    def __init__(self, manager: Any, load: Callable[[], BackendStats], tokenizer: TokenizerLike, model_name: str,
                 max_model_len: int, vocab_size: int, eos_token_id: int | None) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self._manager = manager
        self._load = load
        self._eos = eos_token_id
        self._lock = threading.Lock()  # guards the two fields below
        self._live: dict[str, HFRequest] = {}  # in the manager, unfinished, by request id
        self._closed = False
        self._dead: str | None = None
        self._pump = threading.Thread(target=self._pump_outputs, name="hf-cb-outputs", daemon=True)
        self._pump.start()

    @classmethod
    def load(cls, engine_args: EngineArgs, served_model_name: str, config: HFCBConfig) -> HFCBBackend:
        from functools import partial

        from lab.server.hf_cb_manager import manager_load, start_manager  # torch + transformers
        from lab.server.hf_model import load_hf_model

        model = load_hf_model(engine_args)
        manager = start_manager(model, config)
        return cls(manager, partial(manager_load, manager), model.tokenizer, served_model_name, model.max_model_len,
                   model.vocab_size, model.eos_token_id)

    # ---- the ServingBackend protocol ------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str,
                       priority: int = 0) -> AsyncIterator[Delta]:
        try:
            check_prompt_ids(prompt_token_ids, self.vocab_size, self.max_model_len)
            check_sampling_ids(params, self.vocab_size)
        except InvalidParam as exc:
            raise RequestRefused(str(exc), param=exc.param) from None
        except ValueError as exc:
            raise RequestRefused(str(exc)) from None
        asks = manager_request(params, len(prompt_token_ids), self._eos, self.max_model_len)
        request = HFRequest.start(request_id, prompt_token_ids, params, self.tokenizer)
        self._submit(request, asks)
        async for item in stream(request, self.abort):  # a consumer that left: cancel it in the manager
            yield item

    def abort(self, request_id: str) -> None:
        with self._lock:
            request = self._live.pop(request_id, None)
        if request is None:
            return  # unknown, or the manager already finished it
        request.finish(FinishReason.ABORT)
        self._manager.cancel_request(request_id)

    @property
    def stall_reason(self) -> str | None:
        return None

    @property
    def degraded_reason(self) -> str | None:
        return None

    @property
    def dead_reason(self) -> str | None:
        if self._closed:
            return "the engine is shut down"
        return self._dead

    def stats(self) -> BackendStats:
        return self._load()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            left = list(self._live.values())
            self._live.clear()
        for request in left:
            request.finish(FinishReason.ABORT)
        self._manager.stop(block=True, timeout=SHUTDOWN_JOIN_S, hard_stop=True)  # nothing is left to flush
        self._pump.join(timeout=SHUTDOWN_JOIN_S)

    # ---- the manager's side ---------------------------------------------------------------------
    def _submit(self, request: HFRequest, asks: dict[str, Any]) -> None:
        request_id = request.request_id
        with self._lock:
            if self._closed or self._dead is not None:
                raise BackendError(self.dead_reason or "the backend cannot serve")
            if request_id in self._live:
                raise RequestRefused(f"request id {request_id!r} is already in use")
            self._live[request_id] = request
        added = self._manager.add_request(request.seq.prompt_token_ids, request_id=request_id, streaming=True, **asks)
        if added is None:  # the manager logs why: stopping, or its thread died
            with self._lock:
                self._live.pop(request_id, None)
            raise BackendError("transformers' continuous batching manager did not accept the request (stopping, "
                               "or its generation thread has died)")

    def _pump_outputs(self) -> None:
        while not self._closed:
            output = self._manager.get_result(timeout=POLL_S)
            if output is not None:
                self._deliver(output)
            elif not self._closed and not self._manager.is_running():
                self._fail_all(self._death_reason())
                return

    def _deliver(self, output: Any) -> None:
        """One output of the manager (streaming: every generated token so far) to its request."""
        with self._lock:
            request = self._live.get(output.request_id)
        if request is None:
            return  # aborted meanwhile (its cancel is on the way), or not ours
        if request.seq.first_scheduled_time is None and output.lifespan[0] >= 0:
            request.scheduled(max(output.lifespan[0] - output.created_time, 0.0))  # both the manager's clock
        if output.error is not None:
            self._forget(output.request_id)
            request.fail(RuntimeError(f"transformers' continuous batching failed the request: {output.error}"))
            return
        for token in output.generated_tokens[request.seq.num_output_tokens:]:
            request.on_token(token, self._eos, self.max_model_len)
            if request.finished:
                break
        manager_done = output.is_finished()
        if manager_done and not request.finished:  # defensive: it ended by a rule of its own
            request.finish(FinishReason.LENGTH)
        if request.finished:
            self._forget(output.request_id)
            if not manager_done:  # a stop string (or an abort meanwhile): the manager would go on
                self._manager.cancel_request(output.request_id)

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._live.pop(request_id, None)

    def _death_reason(self) -> str:
        status = getattr(self._manager, "background_thread_status", None)
        error = getattr(status, "fatal_error", None)
        if error is not None:
            return f"transformers' continuous batching thread died: {type(error).__name__}: {error}"
        return "transformers' continuous batching thread has stopped"

    def _fail_all(self, reason: str) -> None:
        logger.error("%s", reason)
        with self._lock:
            self._dead = reason
            left = list(self._live.values())
            self._live.clear()
        for request in left:
            request.fail(RuntimeError(reason))
