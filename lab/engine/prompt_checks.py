"""Which prompts a replica can serve: one function for every backend, with the engine's wording.

Contract: `check_prompt_ids(prompt_ids, vocab_size, max_model_len)` raises `ValueError` for an
empty prompt, a prompt that leaves no room for an output token in the context, or token ids
outside `[0, vocab_size)`; `lab.engine.engine.LLMEngine` and the `hf` server backend both call it, so a client sees
the same refusal from `lab serve --engine hf` as from `--engine lab`. Torch-free.
"""
from __future__ import annotations

from collections.abc import Sequence


def check_prompt_ids(prompt_ids: Sequence[int], vocab_size: int, max_model_len: int) -> None:
    """See the module docstring."""
    if not prompt_ids:
        raise ValueError("prompt is empty: at least one token is needed")
    if len(prompt_ids) >= max_model_len:
        raise ValueError(
            f"prompt has {len(prompt_ids)} tokens but the model's context (max_model_len) is "
            f"{max_model_len}: it must leave room for at least one output token"
        )
    bad = [t for t in prompt_ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt token ids {bad[:5]} are outside the model's vocabulary [0, {vocab_size})")
