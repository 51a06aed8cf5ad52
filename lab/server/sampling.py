"""From a validated request body to engine inputs: prompt token ids, `SamplingParams`, priority.

Contract: `completion_input` / `chat_input` return a `GenerationInput` or raise `APIError`:
- 404 when `model` names another model than the served one (the message names the served one);
- 400 for what this server cannot honour (`n != 1`, logprobs, penalties, tools, batched prompts);
- 400 `context_length_exceeded` when the prompt, or the prompt plus `max_tokens`, is longer than
  the context, naming both lengths (the engine needs room for at least one output token);
- `max_tokens` left out means "the rest of the context" for chat and 16 for completions, as in
  vLLM; for chat `max_completion_tokens` wins over `max_tokens`.
Tokenizing here (not in the engine) gives usage counts and length checks before admission.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.engine.sampling_params import SamplingParams
from lab.server.backend import ServingBackend
from lab.server.errors import APIError, bad_request
from lab.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields


@dataclass(frozen=True)
class GenerationInput:
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise APIError(404, f"The model `{requested}` does not exist: this server serves `{served}`.",
                       param="model", code="model_not_found")


def completion_input(req: CompletionRequest, backend: ServingBackend) -> GenerationInput:
    check_model(req.model, backend.model_name)
    for name, value, default in (("echo", req.echo, False), ("logprobs", req.logprobs, None),
                                 ("suffix", req.suffix, None)):
        if value != default:
            raise bad_request(f"{name} is not supported by this server", param=name, code="unsupported")
    if req.best_of not in (None, 1):
        raise bad_request("best_of must be 1: this server returns one choice per request", param="best_of")
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise bad_request(f"prompt has {len(prompt)} prompts: this server takes one prompt per request",
                              param="prompt", code="unsupported")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = backend.tokenizer.encode(prompt)
    else:
        ids = list(prompt)
    if not ids:
        raise bad_request("prompt is empty: at least one token is needed", param="prompt")
    return GenerationInput(ids, _sampling_params(req, req.max_tokens, len(ids), backend), req.priority)


def chat_input(req: ChatCompletionRequest, backend: ServingBackend) -> GenerationInput:
    check_model(req.model, backend.model_name)
    if req.logprobs or req.top_logprobs:
        raise bad_request("logprobs are not supported by this server", param="logprobs", code="unsupported")
    if req.tools:
        raise bad_request("tools are not supported by this server", param="tools", code="unsupported")
    if req.response_format is not None and req.response_format.get("type", "text") != "text":
        raise bad_request("only response_format {'type': 'text'} is supported", param="response_format",
                          code="unsupported")
    try:
        ids = backend.tokenizer.apply_chat_template(
            req.messages, add_generation_prompt=req.add_generation_prompt, tokenize=True,
            **(req.chat_template_kwargs or {}),
        )
    except ValueError as exc:  # bad roles or content, or the template's raise_exception
        raise bad_request(str(exc), param="messages") from None
    except TypeError as exc:  # chat_template_kwargs that clash with the template's own arguments
        raise bad_request(f"chat_template_kwargs: {exc}", param="chat_template_kwargs") from None
    assert isinstance(ids, list)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return GenerationInput(ids, _sampling_params(req, max_tokens, len(ids), backend), req.priority)


def _sampling_params(req: SamplingFields, max_tokens: int | None, num_prompt_tokens: int,
                     backend: ServingBackend) -> SamplingParams:
    if req.n != 1:
        raise bad_request(f"n={req.n} is not supported: this server returns one choice per request (n must be 1)",
                          param="n", code="unsupported")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) != 0.0:
            raise bad_request(f"{name} is not supported by this server (only 0)", param=name, code="unsupported")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported by this server", param="logit_bias", code="unsupported")
    context = backend.max_model_len
    if num_prompt_tokens >= context:
        raise bad_request(
            f"This model's maximum context length is {context} tokens, but the prompt has {num_prompt_tokens} "
            f"tokens; it must leave room for at least one output token.",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    if max_tokens is None:
        max_tokens = context - num_prompt_tokens
    elif num_prompt_tokens + max_tokens > context:
        raise bad_request(
            f"This model's maximum context length is {context} tokens, but {num_prompt_tokens + max_tokens} "
            f"were requested ({num_prompt_tokens} in the prompt, {max_tokens} for the completion).",
            param="max_tokens", code="context_length_exceeded",
        )
    try:
        return SamplingParams(
            temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
            max_tokens=max_tokens, min_tokens=req.min_tokens, stop=req.stop or (),
            stop_token_ids=tuple(req.stop_token_ids or ()), ignore_eos=req.ignore_eos,
            skip_special_tokens=req.skip_special_tokens,
        )
    except ValueError as exc:  # combinations the schema cannot see (min_tokens > max_tokens, "" stop)
        raise bad_request(str(exc)) from None
