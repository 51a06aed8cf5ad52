"""Run one static batch of `HFRequest`s through transformers' own `generate()` loop.

Contract: `run_batch(model, requests)` left-pads the prompts (attention mask), then calls
`model.module.generate` once — transformers' model, its DynamicCache (no paging), its decode
loop — until every request of the batch has finished, and returns. Two documented hooks plug
our request semantics into that loop, so the baseline differs from the engine only in *how* it
runs the model, not in what it computes:
- `_EngineSampling` (a `LogitsProcessor`) picks each row's token with the engine's `Sampler`
  (greedy argmax, or temperature / top-k / top-p with the request's own seeded generator, EOS and
  stop ids banned below min_tokens) and returns scores where only that token is finite; generate
  runs greedy (`do_sample=False`), so its argmax takes exactly that token.
- `_RequestsDone` (a `StoppingCriteria`) hands each row's new token to its `HFRequest`, which
  applies the engine's stop rules and streams the delta, and reports the rows that are done
  (finished, aborted, or padding), so a row's end never depends on transformers' own EOS logic.
The batch is static: a row that finishes early keeps its slot (its further tokens are ignored)
until the longest one ends, and nothing joins a running batch. That waste, and the padding, are
what the baseline measures.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from lab.engine.sampler import Sampler
from lab.engine.sequence import FinishReason
from lab.server.hf_model import HFModel
from lab.server.hf_request import HFRequest

PAD_TOKEN_ID = 0  # any id works: padded positions are masked out and padding rows' tokens ignored


class _EngineSampling(LogitsProcessor):
    def __init__(self, requests: Sequence[HFRequest], eos_token_id: int | None, device: torch.device) -> None:
        self._requests = requests
        self._eos = eos_token_id
        self._sampler = Sampler()
        self._generators = [_generator(r.params.seed, device) for r in requests]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        banned = [r.banned_token_ids(self._eos) for r in self._requests]
        tokens = self._sampler(scores, [r.params for r in self._requests], self._generators, banned)
        logprobs = self._sampler.take_logprobs()
        for row, logprob in (logprobs.by_row().items() if logprobs is not None else ()):
            self._requests[row].next_logprob = logprob  # _RequestsDone hands it over with the token
        chosen = torch.full_like(scores, float("-inf"))  # (B, V)
        rows = torch.arange(len(tokens), device=scores.device)
        chosen[rows, torch.tensor(tokens, device=scores.device)] = 0.0
        return chosen


class _RequestsDone(StoppingCriteria):
    def __init__(self, requests: Sequence[HFRequest], eos_token_id: int | None, max_model_len: int) -> None:
        self._requests = requests
        self._eos = eos_token_id
        self._max_model_len = max_model_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        for request, token in zip(self._requests, input_ids[:, -1].tolist()):  # (B,) the tokens just chosen
            request.on_token(token, self._eos, self._max_model_len)
        return torch.tensor([r.finished for r in self._requests], device=input_ids.device)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def left_padded(prompts: Sequence[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, longest prompt): every row's last prompt token at the end."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def run_batch(model: HFModel, requests: Sequence[HFRequest]) -> None:
    """See the module docstring. Exceptions propagate: the caller fails the batch's requests."""
    ids, mask = left_padded([r.seq.prompt_token_ids for r in requests], model.device)
    # Enough steps for the longest request; each row stops itself earlier through _RequestsDone.
    steps = max(min(r.params.max_tokens, model.max_model_len - r.seq.num_prompt_tokens) for r in requests)
    # eos_token_id=None: transformers must not end or pad a row on EOS by itself (ignore_eos, min_tokens).
    config = GenerationConfig(max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=PAD_TOKEN_ID)
    model.module.generate(
        input_ids=ids, attention_mask=mask, generation_config=config,
        logits_processor=LogitsProcessorList([_EngineSampling(requests, model.eos_token_id, model.device)]),
        stopping_criteria=StoppingCriteriaList([_RequestsDone(requests, model.eos_token_id, model.max_model_len)]),
    )
    for request in requests:  # defensive: generate ran out of steps before a row's own rule fired
        if not request.finished:
            request.finish(FinishReason.LENGTH)
