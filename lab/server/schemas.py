"""Request bodies of `/v1/completions` and `/v1/chat/completions`, OpenAI's fields plus vLLM's.

Contract: models validate *types* strictly (a string where a number belongs is a 400 naming the
field, never a silent coercion) and the ranges the engine can represent (finite floats; integers
within 64 bits; `n` and `logprobs` within OpenAI's bounds); `sampling.py` turns a valid request
into engine inputs. Unknown fields are ignored, as OpenAI-compatible servers do, so clients that send
fields we do not use (`user`, `metadata`, ...) still work; fields we know but cannot honour with
a non-default value (`echo`, `suffix`, penalties, `logit_bias`, tools) are refused in `sampling.py`
with a clear 400 rather than ignored. `parse_request` reads the body through `request_body.py`
(size cap, off-loop parse, hostile JSON).

vLLM's extensions kept with their names: `top_k`, `min_tokens`, `ignore_eos`, `stop_token_ids`,
`skip_special_tokens`, `return_tokens_as_token_ids`, `priority` (lower is served first; the gateway sets it from the caller's
tier, VIP=0 ... batch=3; a replica started with `--scheduling-policy fcfs` accepts and ignores it)
and, for chat, `add_generation_prompt` and `chat_template_kwargs`.
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from lab.engine.sampling_params import INT64_MAX, INT64_MIN, MAX_LOGPROBS
from lab.server.errors import from_validation_error
from lab.server.request_body import parse_json_object, read_body, run_off_loop

MAX_N = 128  # choices per prompt: OpenAI's bound for `n`


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
    temperature: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)  # OpenAI's range; what a torch generator takes
    stop: str | list[str] | None = None
    presence_penalty: float = Field(0.0, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's extra sampling parameters
    top_k: int = Field(0, ge=-1, le=INT64_MAX)  # 0 or -1: disabled
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    priority: int = Field(0, ge=INT64_MIN, le=INT64_MAX)  # vLLM's extension: lower is served first
    return_tokens_as_token_ids: bool = False  # vLLM's: logprobs name tokens "token_id:{id}", not their text


class CompletionRequest(SamplingFields):
    # One prompt (text or token ids) or a list of prompts (texts or token-id lists): one choice each.
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's and vLLM's default for completions
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # top-k per token (OpenAI: up to 5; vLLM: 20)
    best_of: int | None = None
    suffix: str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name; wins over max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM's chat extensions
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


RequestT = TypeVar("RequestT", bound=SamplingFields)


async def parse_request(request: Request, model: type[RequestT], max_bytes: int) -> RequestT:
    """The body as `model`, or an `APIError`: 413 over `max_bytes`; 400 for malformed or hostile
    JSON (`request_body.py`), a body that is not an object, or a bad field."""
    raw = await read_body(request, max_bytes)

    def parse() -> RequestT:
        try:
            return model.model_validate(parse_json_object(raw))
        except ValidationError as exc:
            raise from_validation_error(exc) from None

    return await run_off_loop(parse, len(raw))
