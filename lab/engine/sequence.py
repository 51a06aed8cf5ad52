"""`Sequence`: the engine's state for one request, shared by the scheduler and the runner.

Torch-free. The vLLM v1 idea: a request has `token_ids` (prompt + generated so far) and
`num_computed_tokens` (how many of them already have KV in the cache). Each step the scheduler
gives a request some new tokens to compute; when the computed tokens catch up with all of its
tokens, the runner samples one more. Prefill, chunked prefill, decode and recompute after
preemption are all the same rule.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from lab.engine.sampling_params import SamplingParams


PENDING_TOKEN_ID = -1  # stands in the output list for a token still on the device (never fed to a model)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens reached, or the model's context is full
    ABORT = "abort"  # the client went away or asked to cancel
    DEADLINE = "deadline"  # still unfinished when its deadline passed


class Priority(enum.IntEnum):
    """The gateway's four tiers. Lower value is served first (vLLM's convention)."""

    VIP = 0
    REALTIME = 1
    ASYNC = 2
    BATCH = 3


@dataclass
class Sequence:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float
    priority: int = 0
    deadline: float | None = None  # absolute time (same clock as arrival_time)

    output_token_ids: list[int] = field(default_factory=list)
    # Async scheduling: the last `num_pending_tokens` output ids are PENDING_TOKEN_ID, sampled
    # on the device but not yet seen by the host (0 or 1; the plain step loop never sets it).
    num_pending_tokens: int = 0
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string that matched
    weights_generation: int = 0  # the weights it runs on (a hot reload's drain keeps two generations live)

    # Timeline, for RequestMetrics.
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_preemptions: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def token_ids(self) -> list[int]:
        """A new list: prompt + outputs (O(n); the runner uses `token_slice` for the hot path)."""
        return self.prompt_token_ids + self.output_token_ids

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def token_id_at(self, position: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[position] if position < n else self.output_token_ids[position - n]

    def token_slice(self, start: int, end: int) -> list[int]:
        """token_ids[start:end] without building the whole prompt + output list."""
        n = len(self.prompt_token_ids)
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]
