"""Typed results that leave the engine, shaped like vLLM's `RequestOutput`.

`RequestOutput.outputs[0]` is the completion (vLLM's layout, n=1); `.text`, `.token_ids` and
`.finish_reason` are shortcuts to it. Each step's output also carries the delta since the
previous one (`new_text`, `new_token_ids`), which the async engine streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestMetrics:
    arrival_time: float  # when the engine accepted the request (time.time())
    first_scheduled_time: float | None  # first step that computed any of its tokens
    first_token_time: float | None  # when its first output token was sampled
    finished_time: float | None
    num_preemptions: int = 0  # times it was preempted and recomputed

    @property
    def time_in_queue_s(self) -> float | None:
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time

    @property
    def time_to_first_token_s(self) -> float | None:
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time

    @property
    def e2e_latency_s(self) -> float | None:
        if self.finished_time is None:
            return None
        return self.finished_time - self.arrival_time


@dataclass(frozen=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", "deadline"; None while running
    stop_reason: int | str | None = None  # the stop token id or stop string that matched


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    new_text: str = ""  # text released since the previous output of this request
    new_token_ids: list[int] = field(default_factory=list)  # tokens since the previous output

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def stop_reason(self) -> int | str | None:
        return self.outputs[0].stop_reason
