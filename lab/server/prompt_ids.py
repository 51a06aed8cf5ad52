"""Prompts to token ids without stalling the event loop.

Contract:
- `await completion_prompt_ids(prompt, backend)`: a completion's `prompt` (one text, one list of
  token ids, or a list of either) as one list of token ids per prompt, each non-empty and inside
  the vocabulary; else a 400 naming `prompt` (`prompt.3` for the fourth of several).
- `await chat_prompt_ids(req, backend)`: the token ids of the rendered chat template; a 400 naming
  `messages` for roles or content the template refuses, `chat_template_kwargs` for arguments that
  clash with the template's own.
- Texts longer than `ON_LOOP_CHARS` in all are tokenized on a worker thread through the
  tokenizer's GIL-releasing path (`encode(..., release_gil=True)`): a 10 MB prompt is ~10 s of
  CPU, during which every other stream keeps going. Shorter ones, most requests, are tokenized on
  the loop: a thread hop would cost more than the work, and they never queue behind a long one.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from lab.server.backend import ServingBackend
from lab.server.errors import bad_request
from lab.server.schemas import ChatCompletionRequest

ON_LOOP_CHARS = 16_384  # ~1 ms of tokenizing; longer texts go to a worker thread
T = TypeVar("T")


async def completion_prompt_ids(prompt: str | list[int] | list[str] | list[list[int]],
                                backend: ServingBackend) -> list[list[int]]:
    many = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], (str, list))
    prompts: list = list(prompt) if many else [prompt]
    texts = [p for p in prompts if isinstance(p, str)]
    encode = backend.tokenizer.encode

    def tokenize() -> list[list[int]]:
        return [encode(p, release_gil=True) if isinstance(p, str) else list(p) for p in prompts]

    ids = await _maybe_off_loop(tokenize, sum(len(t) for t in texts))
    for i, prompt_ids in enumerate(ids):
        _check_ids(prompt_ids, backend.vocab_size, f"prompt.{i}" if many and len(ids) > 1 else "prompt")
    return ids


async def chat_prompt_ids(req: ChatCompletionRequest, backend: ServingBackend) -> list[int]:
    def render() -> list[int]:
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
        return ids

    ids = await _maybe_off_loop(render, sum(_text_size(m) for m in req.messages))
    _check_ids(ids, backend.vocab_size, "messages")
    return ids


async def _maybe_off_loop(fn: Callable[[], T], num_chars: int) -> T:
    return await asyncio.to_thread(fn) if num_chars > ON_LOOP_CHARS else fn()


def _text_size(message: dict) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part.get("text", "")) for part in content if isinstance(part, dict)
                   and isinstance(part.get("text"), str))
    return 0


def _check_ids(ids: list[int], vocab_size: int, param: str) -> None:
    if not ids:
        raise bad_request(f"{param} is empty: at least one token is needed", param=param)
    if min(ids) < 0 or max(ids) >= vocab_size:  # C-speed scan first: a prompt may hold 100k+ ids
        bad = [t for t in ids if not 0 <= t < vocab_size][:5]
        raise bad_request(f"{param}: token ids {bad} are outside the model's vocabulary [0, {vocab_size})",
                          param=param)
