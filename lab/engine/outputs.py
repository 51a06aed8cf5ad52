"""Typed results that leave the engine, shaped like vLLM's `RequestOutput`.

`RequestOutput.outputs[0]` is the completion (vLLM's layout, n=1); `.text`, `.token_ids` and
`.finish_reason` are shortcuts to it. Each step's output also carries the delta since the
previous one (`new_text`, `new_token_ids`, and `new_logprobs` when the request asked for
logprobs), which the async engine streams. A request the engine had to end because a step failed
on it alone finishes with reason "abort" and says why in `error`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class RequestFailedError(RuntimeError):
    """The engine ended this request because a step failed on it alone (its batch went on);
    `AsyncLLM` raises it in that request's stream (torch-free here, for the servers that catch it)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability under the model (log_softmax of the raw logits, as
    vLLM's default `raw_logprobs`: before temperature, top-k/top-p and min_tokens bans)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the k most likely (token id, logprob), best first; k = params.logprobs


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


class CompletionOutput:
    """One completion: `text`, `token_ids`, `finish_reason`, `stop_reason` (read-only).

    `CompletionOutput.snapshot` makes one whose text and token ids are prefixes of buffers that
    only grow (the engine's, per step), sliced on first read: a step's output costs O(1), not
    O(tokens so far), for the many outputs whose cumulative fields nobody reads.
    """

    __slots__ = ("_index", "_finish_reason", "_stop_reason", "_text", "_token_ids", "_text_src", "_tokens_src")

    def __init__(
        self,
        index: int,
        text: str,
        token_ids: list[int],
        finish_reason: str | None,  # "stop", "length", "abort", "deadline"; None while running
        stop_reason: int | str | None = None,  # the stop token id or stop string that matched
    ) -> None:
        self._index = index
        self._finish_reason = finish_reason
        self._stop_reason = stop_reason
        self._text: str | None = text
        self._token_ids: list[int] | None = token_ids
        self._text_src: tuple[str, int] | None = None
        self._tokens_src: tuple[list[int], int] | None = None

    @classmethod
    def snapshot(
        cls,
        index: int,
        text_source: tuple[str, int],  # (buffer, n): the text is buffer[:n]
        token_source: tuple[list[int], int],  # (list whose first n items never change, n): token_ids is list[:n]
        finish_reason: str | None,
        stop_reason: int | str | None = None,
    ) -> CompletionOutput:
        out = cls.__new__(cls)
        out._index, out._finish_reason, out._stop_reason = index, finish_reason, stop_reason
        out._text = out._token_ids = None
        out._text_src, out._tokens_src = text_source, token_source
        return out

    @property
    def index(self) -> int:
        return self._index

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def stop_reason(self) -> int | str | None:
        return self._stop_reason

    @property
    def text(self) -> str:
        if self._text is None:
            buffer, n = self._text_src
            self._text = buffer[:n]
        return self._text

    @property
    def token_ids(self) -> list[int]:
        if self._token_ids is None:
            source, n = self._tokens_src
            self._token_ids = source[:n]
        return self._token_ids

    @property
    def num_token_ids(self) -> int:
        """len(token_ids), without copying them."""
        return self._tokens_src[1] if self._token_ids is None else len(self._token_ids)

    def _key(self) -> tuple:
        return (self.index, self.text, self.token_ids, self.finish_reason, self.stop_reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompletionOutput):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # mutable-looking fields (a list), as the dataclass it replaces

    def __repr__(self) -> str:
        return (
            f"CompletionOutput(index={self.index}, text={self.text!r}, token_ids={self.token_ids}, "
            f"finish_reason={self.finish_reason!r}, stop_reason={self.stop_reason!r})"
        )


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
    new_logprobs: list[TokenLogprob] = field(default_factory=list)  # one per new token, if logprobs were asked
    error: str | None = None  # why the engine ended it (a step failed on this request alone); None otherwise
    # With `error`: True when the request's own input is at fault (another replica would fail it too); False
    # for the engine's own failures (CUDA out of memory, non-finite logits), which another replica may serve.
    error_is_request_fault: bool = True

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def num_output_tokens(self) -> int:
        """len(token_ids), without materializing them (a streaming server asks every step)."""
        return self.outputs[0].num_token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def stop_reason(self) -> int | str | None:
        return self.outputs[0].stop_reason
