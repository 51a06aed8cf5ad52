"""Token logprobs in OpenAI's two shapes: the legacy completions one and chat's.

Contract (the values are the engine's `TokenLogprob`s: log_softmax of the raw logits):
- `completion_logprobs(logprobs, texts, offset)` -> (`{"tokens", "token_logprobs", "top_logprobs",
  "text_offset"}`, next offset): `top_logprobs` maps each of the k most likely tokens' text to its
  logprob, plus the sampled token when it is not among them (as vLLM and OpenAI do); `text_offset`
  is each token's offset in the completion's text, continued across stream chunks by `offset`.
- `chat_logprobs(logprobs, texts)` -> `{"content": [{"token", "logprob", "bytes", "top_logprobs":
  [{"token", "logprob", "bytes"}, ...]}, ...]}`.
- A token's text is its id decoded alone with special tokens kept (`TokenTexts`, cached per id),
  or, with vLLM's `return_tokens_as_token_ids`, `"token_id:{id}"`: texts can collide (byte-level
  pieces of one character all decode to U+FFFD) where ids cannot. `bytes` are the text's UTF-8
  bytes. A logprob JSON cannot carry (-inf, NaN) is written as -9999.0, vLLM's stand-in.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lab.engine.outputs import TokenLogprob
from lab.server.backend import TokenizerLike

UNREPRESENTABLE_LOGPROB = -9999.0  # vLLM's value for a logprob JSON cannot carry (-inf)


class TokenTexts:
    def __init__(self, tokenizer: TokenizerLike, as_token_ids: bool = False) -> None:
        self._tokenizer = tokenizer
        self._as_token_ids = as_token_ids
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = (f"token_id:{token_id}" if self._as_token_ids
                    else self._tokenizer.decode([token_id], skip_special_tokens=False))
            self._texts[token_id] = text
        return text


def completion_logprobs(logprobs: Sequence[TokenLogprob], texts: TokenTexts, offset: int) -> tuple[dict[str, Any], int]:
    tokens, offsets = [], []
    for lp in logprobs:
        tokens.append(texts(lp.token_id))
        offsets.append(offset)
        offset += len(tokens[-1])
    tops = []
    for lp in logprobs:
        top = {texts(t): _json_float(v) for t, v in lp.top}
        top.setdefault(texts(lp.token_id), _json_float(lp.logprob))
        tops.append(top)
    body = {"tokens": tokens, "token_logprobs": [_json_float(lp.logprob) for lp in logprobs],
            "top_logprobs": tops, "text_offset": offsets}
    return body, offset


def chat_logprobs(logprobs: Sequence[TokenLogprob], texts: TokenTexts) -> dict[str, Any]:
    return {"content": [{**_entry(lp.token_id, lp.logprob, texts),
                         "top_logprobs": [_entry(t, v, texts) for t, v in lp.top]} for lp in logprobs]}


def _entry(token_id: int, logprob: float, texts: TokenTexts) -> dict[str, Any]:
    text = texts(token_id)
    return {"token": text, "logprob": _json_float(logprob), "bytes": list(text.encode("utf-8"))}


def _json_float(value: float) -> float:
    return value if math.isfinite(value) else UNREPRESENTABLE_LOGPROB
