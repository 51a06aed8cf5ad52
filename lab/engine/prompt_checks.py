"""Which requests a replica can serve: one set of functions for every backend, with the engine's wording.

Contract (torch-free; each raises `ValueError` naming the problem, nothing else changes):
- `check_prompt_ids(prompt_ids, vocab_size, max_model_len)`: an empty prompt, a prompt that leaves
  no room for an output token in the context, or token ids outside `[0, vocab_size)`;
- `check_sampling_ids(params, vocab_size)`: the token ids a `SamplingParams` names
  (`stop_token_ids`, banned below `min_tokens` by an index into the logits) outside the
  vocabulary; an `InvalidParam` naming the field.
`lab.engine.engine.LLMEngine` and the `hf` server backend both call them, and so does the server
before a request reaches either, so a client sees the same refusal from `lab serve --engine hf`
as from `--engine lab`, and no request can index past the logits of the batch it joins.
"""
from __future__ import annotations

from collections.abc import Sequence

from lab.engine.sampling_params import InvalidParam, SamplingParams


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


def check_sampling_ids(params: SamplingParams, vocab_size: int) -> None:
    """See the module docstring."""
    bad = [t for t in params.stop_token_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidParam("stop_token_ids",
                           f"stop_token_ids {bad[:5]} are outside the model's vocabulary [0, {vocab_size})")
