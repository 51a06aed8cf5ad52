"""`HFRequest`: one request of the transformers baseline, from submission to its last `Delta`.

Torch-free. The baseline's worker thread feeds it one sampled token at a time (`on_token`); it
applies the engine's own stop rules (`lab.engine.stop_checker.check_stop`: EOS, stop token ids,
`max_tokens`, the context) and stop strings through the engine's `IncrementalDetokenizer`, so
both engines end a request, and cut its text, at the same token. Every change is pushed to the
asyncio queue of the coroutine serving the request (`deltas`), thread-safely, as a `Delta`; a
failure is pushed as a `BackendError`.

`HFRequest.start(request_id, prompt_token_ids, params, tokenizer)` makes one on the running event loop with its
detokenizer; `stream(request, abort)` yields its deltas up to the finished one and calls `abort(request_id)` when
the consumer leaves first (both transformers backends serve a request this way).

Thread contract: `on_token`/`fail` run on the worker thread, `finish(ABORT)` (an abort) on the
event loop; a lock makes the first finish win and everything after it a no-op, so exactly one
delta carries a finish_reason and nothing follows it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

from lab.engine.detokenizer import IncrementalDetokenizer
from lab.engine.outputs import TokenLogprob
from lab.engine.sampling_params import SamplingParams
from lab.engine.sequence import FinishReason, Sequence
from lab.engine.stop_checker import check_stop
from lab.server.backend import BackendError, Delta


class HFRequest:
    @classmethod
    def start(cls, request_id: str, prompt_token_ids: list[int], params: SamplingParams, tokenizer) -> HFRequest:
        detokenizer = IncrementalDetokenizer(tokenizer, prompt_token_ids,
                                             skip_special_tokens=params.skip_special_tokens, stop=params.stop)
        return cls(request_id, prompt_token_ids, params, detokenizer, asyncio.get_running_loop())

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 detokenizer: IncrementalDetokenizer, loop: asyncio.AbstractEventLoop) -> None:
        self.seq = Sequence(request_id, list(prompt_token_ids), params, arrival_time=time.monotonic())
        self.deltas: asyncio.Queue[Delta | BackendError] = asyncio.Queue()
        self._detokenizer = detokenizer
        self._loop = loop
        self._lock = threading.Lock()
        self._emitted_tokens = 0
        self.next_logprob: TokenLogprob | None = None  # the logprob of the token `on_token` gets next
        self._logprobs: list[TokenLogprob] = []  # one per output token, when params.logprobs is set

    @property
    def request_id(self) -> str:
        return self.seq.request_id

    @property
    def params(self) -> SamplingParams:
        return self.seq.sampling_params

    @property
    def finished(self) -> bool:
        return self.seq.finish_reason is not None

    def scheduled(self, queue_time_s: float | None = None) -> None:
        """It left the queue: now, or `queue_time_s` after its arrival when the engine measured that itself."""
        seq = self.seq
        seq.first_scheduled_time = time.monotonic() if queue_time_s is None else seq.arrival_time + queue_time_s

    def banned_token_ids(self, eos_token_id: int | None) -> list[int]:
        """While below min_tokens, the tokens that would end the request cannot be drawn (as the engine)."""
        params = self.params
        if self.seq.num_output_tokens >= params.min_tokens:
            return []
        banned = list(params.stop_token_ids)
        if not params.ignore_eos and eos_token_id is not None:
            banned.append(eos_token_id)
        return banned

    def on_token(self, token_id: int, eos_token_id: int | None, max_model_len: int) -> None:
        """Append one sampled token, decide whether it ends the request, emit the delta."""
        with self._lock:
            if self.finished:
                return  # aborted meanwhile, or a padded row of a static batch
            seq = self.seq
            seq.output_token_ids.append(token_id)
            if self.params.logprobs is not None and self.next_logprob is not None:
                self._logprobs.append(self.next_logprob)
            if seq.first_token_time is None:
                seq.first_token_time = time.monotonic()
            reason = check_stop(seq, eos_token_id, max_model_len)
            text = ""
            if reason is not FinishReason.STOP:  # a stop token is not part of the text
                text = self._detokenizer.add(token_id)
                if self._detokenizer.stopped_by is not None:
                    reason = FinishReason.STOP
                    seq.stop_reason = self._detokenizer.stopped_by
            if reason is not None:
                text += self._end(reason)
            self._emit(text)

    def finish(self, reason: FinishReason) -> None:
        """End it now (an abort, or a drained queue); a no-op once finished."""
        with self._lock:
            if not self.finished:
                self._emit(self._end(reason))

    def fail(self, error: Exception) -> None:
        """The batch it ran in failed: its stream raises `BackendError`."""
        with self._lock:
            if not self.finished:
                self.seq.finish_reason = FinishReason.ABORT
                self._put(BackendError(f"{type(error).__name__}: {error}"))

    def _end(self, reason: FinishReason) -> str:
        self.seq.finish_reason = reason
        self.seq.finished_time = time.monotonic()
        return self._detokenizer.finish() if self._detokenizer.stopped_by is None else ""

    def _emit(self, text: str) -> None:
        seq = self.seq
        new_tokens = tuple(seq.output_token_ids[self._emitted_tokens:])
        new_logprobs = tuple(self._logprobs[self._emitted_tokens:])
        self._emitted_tokens = seq.num_output_tokens
        queued = seq.first_scheduled_time
        self._put(Delta(
            text=text, token_ids=new_tokens, num_output_tokens=seq.num_output_tokens,
            finish_reason=seq.finish_reason.value if seq.finish_reason is not None else None,
            queue_time_s=queued - seq.arrival_time if queued is not None else None,
            logprobs=new_logprobs,
        ))

    def _put(self, item: Delta | BackendError) -> None:
        try:
            self._loop.call_soon_threadsafe(self.deltas.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is closed: the server is gone, nobody is listening


async def stream(request: HFRequest, abort: Callable[[str], None]) -> AsyncIterator[Delta]:
    """The request's deltas up to the finished one; a `BackendError` raises; a consumer that leaves aborts it."""
    try:
        while True:
            item = await request.deltas.get()
            if isinstance(item, BackendError):
                raise item
            yield item
            if item.finished:
                return
    finally:
        abort(request.seq.request_id)
