"""Typed records that cross the pipe between a server and its engine core process.

Contract (torch-free, all picklable; `core_process.py` is the child side, `core_client.py` the
parent side):
- parent -> core: a *list* of commands per message (the parent's sender thread batches whatever
  queued up): `AddRequest`, `AbortRequest`, `Shutdown`.
- core -> parent, once: `CoreReady` (what the parent needs to serve) or `CoreLoadFailed`
  (the engine could not be built: the exception's type name and message).
- core -> parent, then: one `StepBatch` per loop turn that did anything (applied commands or ran
  a step): every request's new output since the previous batch (`CoreOutput`), per-request
  failures (`RequestFailure`: refused at admission, or failed in a step), and a stats snapshot
  taken after the step, so the parent answers `/metrics` without asking the core.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.engine.sampling_params import SamplingParams


# ---- parent -> core ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    deadline: float | None = None  # time.time() after which the scheduler ends the request


@dataclass(frozen=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True)
class Shutdown:
    pass


# ---- core -> parent ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoreReady:
    max_model_len: int
    checkpoint_dir: str | None  # the tokenizer's default home (None: a preset, DeepSeek's tokenizer)
    num_gpu_blocks: int
    device: str


@dataclass(frozen=True)
class CoreLoadFailed:
    error_type: str  # e.g. "ValueError"
    message: str


@dataclass(frozen=True)
class CoreOutput:
    """What one step (or an abort) changed in one request: the delta since its previous output."""

    request_id: str
    new_text: str
    new_token_ids: list[int]
    num_output_tokens: int  # cumulative
    finish_reason: str | None  # set on the request's last output only
    queue_time_s: float | None  # arrival to first scheduled step; None until scheduled
    num_preemptions: int  # cumulative


@dataclass(frozen=True)
class RequestFailure:
    request_id: str
    refused: bool  # True: add_request refused it (nothing ran); False: it failed while running
    message: str


@dataclass(frozen=True)
class CoreStats:
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage_perc: float  # fraction of KV blocks in use, in [0, 1]


IDLE_STATS = CoreStats(0, 0, 0.0)


@dataclass(frozen=True)
class StepBatch:
    outputs: list[CoreOutput]
    failures: list[RequestFailure]
    stats: CoreStats
