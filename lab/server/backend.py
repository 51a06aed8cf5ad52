"""`ServingBackend`: what the HTTP layer needs from an inference engine, and nothing more.

Contract (an implementation is an adapter over one engine; `engine_backend.AsyncLLMBackend` is
the one over our `AsyncLLM`; a transformers `generate` baseline would be another):
- `generate(prompt_token_ids, params, request_id, priority)` is an async iterator of `Delta`s.
  Tokenizing, chat templates and length checks are the HTTP layer's job, so a backend only ever
  sees validated token ids. A backend that refuses the request raises `RequestRefused` before the
  first delta (the server answers 400); a failure after that raises `BackendError` (500, or an
  error event mid-stream), or `RequestFailed` when the engine failed on this request alone and
  went on with the rest of its batch (422: retrying it elsewhere would fail the same way). The last
  delta has `finish_reason` set; nothing follows it. With `params.logprobs` set, every delta
  carries one `TokenLogprob` per token it carries.
- A consumer that stops iterating (closes or is cancelled) must abort its request and free its
  resources (KV blocks) without further calls.
- `abort(request_id)` ends a live request: its stream's last delta has finish_reason "abort".
  Unknown or finished ids are ignored. It is synchronous so it can run in `finally` blocks.
- `stats()` is a cheap snapshot for the gauges of /metrics (with the step-gap histogram where the engine
  measures it: ours; transformers' engines leave it None); `shutdown()` stops the engine.
- `dead_reason` is None while the engine can serve; once it cannot (its process or loop is gone,
  or it was shut down) it says why, and `/health` and `/ready` answer 503 with it.
- `stall_reason` is None while the engine's step loop turns; when it has not for longer than the
  backend's limit (a hung step, a stopped core process) it says so, and `/health`, `/ready` and
  new requests answer 503 until the loop turns again. A backend that cannot tell returns None.
- `degraded_reason` is None while the engine's output is sound; when its latest step sampled non-finite
  logits (corrupt weights) it says so, and `/health` and `/ready` answer 503. A backend that cannot tell
  returns None.
- `vocab_size`: token ids the model has logits for (what prompts and `stop_token_ids` may name).
- `finish_reason` uses the engine's vocabulary: "stop", "length", "abort", "deadline"
  (`responses.openai_finish_reason` maps it to OpenAI's values).

This module is torch-free: the server imports it before any engine is loaded.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from lab.engine.outputs import TokenLogprob
from lab.engine.sampling_params import SamplingParams
from lab.engine.step_gaps import StepGapStats


class RequestRefused(ValueError):
    """The backend will not run this request (e.g. it can never fit the KV cache); `param` names the
    request field at fault, when one is (the 400's `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class BackendError(RuntimeError):
    """The backend failed while running a request it had accepted."""


class RequestFailed(BackendError):
    """The engine failed on this request alone and went on with the rest of its batch."""


@dataclass(frozen=True)
class Delta:
    text: str  # text released since the previous delta (may be "" while text is held back)
    token_ids: tuple[int, ...]  # tokens generated since the previous delta
    num_output_tokens: int  # generated so far, cumulative (the `completion_tokens` of usage)
    finish_reason: str | None = None  # set on the last delta only: stop, length, abort, deadline
    queue_time_s: float | None = None  # arrival to first scheduled step; known once scheduled
    num_preemptions: int = 0  # cumulative: times the request was preempted and recomputed
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token of `token_ids` when logprobs were asked

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class BackendStats:
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage: float  # fraction of KV blocks in use, in [0, 1]
    step_gaps: StepGapStats | None = None  # gaps between engine steps (`lab.engine.step_gaps`); None: not measured


class TokenizerLike(Protocol):
    def encode(self, text: str, add_special_tokens: bool = True, release_gil: bool = False) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **template_kwargs: Any,
    ) -> str | list[int]: ...


class ServingBackend(Protocol):
    model_name: str  # the served model name (what clients pass as `model`)
    max_model_len: int  # context length: prompt + output tokens
    vocab_size: int  # token ids the model has logits for
    tokenizer: TokenizerLike

    def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncIterator[Delta]: ...

    def abort(self, request_id: str) -> None: ...

    @property
    def dead_reason(self) -> str | None: ...

    @property
    def stall_reason(self) -> str | None: ...

    @property
    def degraded_reason(self) -> str | None: ...

    def stats(self) -> BackendStats: ...

    def shutdown(self) -> None: ...
