"""Response bodies and stream chunks in OpenAI's shapes, for completions and chat.

Contract: a `ResponseBuilder` (one per request: id, created, model, and the endpoint's `Shape`)
makes the non-streamed body (`full`, one `ChoiceResult` per choice in index order), each SSE chunk
(`chunk`, one choice's delta: its `index`, and its `logprobs` already in the endpoint's shape,
`logprobs.py`), and the usage-only last chunk (`usage_chunk`, when `stream_options.include_usage`).
Each choice of a chat stream opens with the assistant role in its first chunk's delta, as OpenAI's do.

finish_reason: the engine says "stop", "length", "abort" or "deadline". "deadline" (the request
ran out of its time budget) means "the text is truncated, not a natural end", which is what
"length" tells an OpenAI client. "abort" (the server cut the request short: a drain timeout) stays
"abort", vLLM's own value, never a normal finish; `serving.py` also ends such a stream with an
error event and answers such a non-streamed request with a 503. The engine's own reason stays
visible in each choice as `engine_finish_reason` (an extra key OpenAI clients ignore) and in the
`vllm:request_success_total{finished_reason=...}` metric.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_OPENAI_FINISH_REASON = {"stop": "stop", "length": "length", "deadline": "length", "abort": "abort"}


def openai_finish_reason(engine_reason: str | None) -> str | None:
    if engine_reason is None:
        return None
    return _OPENAI_FINISH_REASON.get(engine_reason, "stop")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass(frozen=True)
class Shape:
    """What differs between the two endpoints."""

    id_prefix: str
    object_full: str
    object_chunk: str
    chat: bool


COMPLETION = Shape("cmpl-", "text_completion", "text_completion", chat=False)
CHAT = Shape("chatcmpl-", "chat.completion", "chat.completion.chunk", chat=True)


@dataclass(frozen=True)
class ChoiceResult:
    """One finished choice of a non-streamed answer."""

    index: int
    text: str
    engine_reason: str | None
    logprobs: dict[str, Any] | None = None  # in the endpoint's shape (`logprobs.py`), or None


@dataclass(frozen=True)
class ResponseBuilder:
    shape: Shape
    request_id: str
    created: int  # unix seconds, as OpenAI
    model: str

    def full(self, choices: list[ChoiceResult], usage: Usage) -> dict[str, Any]:
        bodies = []
        for result in choices:
            choice: dict[str, Any] = {"index": result.index}
            if self.shape.chat:
                choice["message"] = {"role": "assistant", "content": result.text}
            else:
                choice["text"] = result.text
            choice.update(self._finish(result.engine_reason, result.logprobs))
            bodies.append(choice)
        return {**self._head(self.shape.object_full), "choices": bodies, "usage": usage.as_dict()}

    def chunk(self, text: str, engine_reason: str | None = None, *, index: int = 0, first: bool = False,
              include_usage: bool = False, logprobs: dict[str, Any] | None = None) -> str:
        choice: dict[str, Any] = {"index": index}
        if self.shape.chat:
            delta: dict[str, str] = {"role": "assistant"} if first else {}
            if text or first:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text
        choice.update(self._finish(engine_reason, logprobs))
        body = {**self._head(self.shape.object_chunk), "choices": [choice]}
        if include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the last when include_usage
        return sse(body)

    def usage_chunk(self, usage: Usage) -> str:
        return sse({**self._head(self.shape.object_chunk), "choices": [], "usage": usage.as_dict()})

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    @staticmethod
    def _finish(engine_reason: str | None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"logprobs": logprobs, "finish_reason": openai_finish_reason(engine_reason)}
        if engine_reason is not None:
            fields["engine_finish_reason"] = engine_reason
        return fields


def sse(body: dict[str, Any]) -> str:
    """One server-sent event carrying a JSON body."""
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
