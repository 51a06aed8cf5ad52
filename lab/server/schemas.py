"""Request bodies of `/v1/completions` and `/v1/chat/completions`, OpenAI's fields plus vLLM's.

Contract: models validate *types* strictly (a string where a number belongs is a 400 naming the
field, never a silent coercion) and simple ranges; `sampling.py` turns a valid request into
engine inputs. Unknown fields are ignored, as OpenAI-compatible servers do, so clients that send
fields we do not use (`user`, `metadata`, ...) still work; fields we know but cannot honour with
a non-default value (`n > 1`, `logprobs`, penalties, tools) are refused in `sampling.py` with a
clear 400 rather than ignored.

vLLM's extensions kept with their names: `top_k`, `min_tokens`, `ignore_eos`, `stop_token_ids`,
`skip_special_tokens`, `priority` (lower is served first; the gateway sets it from the caller's
tier, VIP=0 ... batch=3; a replica started with `--scheduling-policy fcfs` accepts and ignores it)
and, for chat, `add_generation_prompt` and `chat_template_kwargs`.
"""
from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from lab.server.errors import APIError, from_validation_error


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False  # one last chunk with `usage` (and empty `choices`)


class SamplingFields(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None  # None: the served model (vLLM accepts a missing model)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's extra sampling parameters
    top_k: int = Field(0, ge=-1)  # 0 or -1: disabled
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    priority: int = 0  # vLLM's extension: lower is served first


class CompletionRequest(SamplingFields):
    # One prompt: text, token ids, or a one-element list of either (what some clients send).
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's and vLLM's default for completions
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name; wins over max_tokens
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM's chat extensions
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


RequestT = TypeVar("RequestT", bound=SamplingFields)


async def parse_request(request: Request, model: type[RequestT]) -> RequestT:
    """The body as `model`, or an `APIError` 400: malformed JSON, not an object, or a bad field."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON in the request body: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}",
                       code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
