"""From a validated request body to engine inputs: one `Choice` (prompt ids + `SamplingParams`) per answer.

Contract: `await completion_input(req, backend)` / `await chat_input(req, backend)` return a
`GenerationInput` or raise `APIError`:
- 404 when `model` names another model than the served one (the message names the served one);
- choices: a completion prompt may be a list of prompts; each prompt gets `n` choices, indexed
  `prompt_index * n + i` (OpenAI's and vLLM's order). With a `seed`, choice i samples with
  `seed + i` (wrapped to 64 bits), so n seeded choices differ and repeat;
- 400 naming the field for anything the engine cannot represent, *before* the engine sees it:
  prompt token ids outside the vocabulary, `stop_token_ids` outside it, non-finite or out-of-range
  sampling values (`SamplingParams` raises `InvalidParam` naming it), and for what this server
  cannot honour (`echo`, `suffix`, `best_of` other than n, penalties, `logit_bias`, tools);
- 400 `context_length_exceeded` when a prompt, or a prompt plus `max_tokens`, is longer than the
  context, naming both lengths (the engine needs room for at least one output token);
- `max_tokens` left out means "the rest of the context" for chat and 16 for completions, as in
  vLLM; for chat `max_completion_tokens` wins over `max_tokens`.
Tokenizing here (not in the engine) gives usage counts and length checks before admission; it runs
through `prompt_ids.py`, off the event loop for long texts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lab.engine.prompt_checks import check_sampling_ids
from lab.engine.sampling_params import INT64_MIN, InvalidParam, SamplingParams
from lab.server.backend import ServingBackend
from lab.server.errors import APIError, bad_request
from lab.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from lab.server.prompt_ids import chat_prompt_ids, completion_prompt_ids

MAX_CHOICES_PER_REQUEST = 1024  # prompts x n: each choice is an engine request; past this, split the request


@dataclass(frozen=True)
class Choice:
    index: int  # its place in the answer's `choices`
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class GenerationInput:
    choices: list[Choice]
    num_prompt_tokens: int  # usage: every prompt counted once, whatever its n
    priority: int
    logprobs: bool  # the answer carries logprobs (each choice's k is in its params)
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids: logprobs name tokens "token_id:{id}"


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise APIError(404, f"The model `{requested}` does not exist: this server serves `{served}`.",
                       param="model", code="model_not_found")


async def completion_input(req: CompletionRequest, backend: ServingBackend) -> GenerationInput:
    check_model(req.model, backend.model_name)
    for name, value, default in (("echo", req.echo, False), ("suffix", req.suffix, None)):
        if value != default:
            raise bad_request(f"{name} is not supported by this server", param=name, code="unsupported")
    if req.best_of not in (None, req.n):
        raise bad_request(f"best_of must equal n ({req.n}): this server returns every choice it samples",
                          param="best_of", code="unsupported")
    prompts = await completion_prompt_ids(req.prompt, backend)
    return _generation_input(req, prompts, req.max_tokens, req.logprobs, backend)


async def chat_input(req: ChatCompletionRequest, backend: ServingBackend) -> GenerationInput:
    check_model(req.model, backend.model_name)
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    if req.tools:
        raise bad_request("tools are not supported by this server", param="tools", code="unsupported")
    if req.response_format is not None and req.response_format.get("type", "text") != "text":
        raise bad_request("only response_format {'type': 'text'} is supported", param="response_format",
                          code="unsupported")
    ids = await chat_prompt_ids(req, backend)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return _generation_input(req, [ids], max_tokens, logprobs, backend)


def _generation_input(req: SamplingFields, prompts: list[list[int]], max_tokens: int | None,
                      logprobs: int | None, backend: ServingBackend) -> GenerationInput:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) != 0.0:
            raise bad_request(f"{name} is not supported by this server (only 0)", param=name, code="unsupported")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported by this server", param="logit_bias", code="unsupported")
    if len(prompts) * req.n > MAX_CHOICES_PER_REQUEST:
        raise bad_request(f"{len(prompts)} prompt(s) x n={req.n} make {len(prompts) * req.n} choices; one request may "
                          f"ask for at most {MAX_CHOICES_PER_REQUEST}", param="n")
    chat = isinstance(req, ChatCompletionRequest)
    names = ("max_completion_tokens" if chat and req.max_completion_tokens is not None else "max_tokens",
             "messages" if chat else "prompt")
    choices = []
    for p, ids in enumerate(prompts):
        where = (names[0], f"{names[1]}.{p}" if len(prompts) > 1 else names[1])
        params = _sampling_params(req, _max_tokens(max_tokens, len(ids), backend.max_model_len, where), logprobs,
                                  backend.vocab_size)
        for i in range(req.n):
            seeded = params if params.seed is None or i == 0 else _with_seed(params, params.seed + i)
            choices.append(Choice(p * req.n + i, ids, seeded))
    return GenerationInput(choices, sum(len(ids) for ids in prompts), req.priority, logprobs is not None,
                           req.return_tokens_as_token_ids)


def _max_tokens(max_tokens: int | None, num_prompt_tokens: int, context: int, params: tuple[str, str]) -> int:
    """max_tokens within the context; `params` names (the max_tokens field, the prompt) for errors."""
    if num_prompt_tokens >= context:
        raise bad_request(
            f"This model's maximum context length is {context} tokens, but the prompt has {num_prompt_tokens} "
            f"tokens; it must leave room for at least one output token.",
            param=params[1], code="context_length_exceeded",
        )
    if max_tokens is None:
        return context - num_prompt_tokens
    if num_prompt_tokens + max_tokens > context:
        raise bad_request(
            f"This model's maximum context length is {context} tokens, but {num_prompt_tokens + max_tokens} "
            f"were requested ({num_prompt_tokens} in the prompt, {max_tokens} for the completion).",
            param=params[0], code="context_length_exceeded",
        )
    return max_tokens


def _sampling_params(req: SamplingFields, max_tokens: int, logprobs: int | None, vocab_size: int) -> SamplingParams:
    try:
        params = SamplingParams(
            temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
            max_tokens=max_tokens, min_tokens=req.min_tokens, stop=req.stop or (),
            stop_token_ids=tuple(req.stop_token_ids or ()), ignore_eos=req.ignore_eos,
            skip_special_tokens=req.skip_special_tokens, logprobs=logprobs,
        )
        check_sampling_ids(params, vocab_size)  # the engine would index its logits with them
    except InvalidParam as exc:
        param = "top_logprobs" if exc.param == "logprobs" and isinstance(req, ChatCompletionRequest) else exc.param
        raise bad_request(str(exc), param=param) from None
    return params


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    wrapped = (seed - INT64_MIN) % 2**64 + INT64_MIN  # stays a 64-bit signed integer
    return dataclasses.replace(params, seed=wrapped)
