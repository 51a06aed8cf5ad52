"""Token sampling from a batch of logits, each row with its own `SamplingParams`.

Greedy rows take the argmax (the reference path). Random rows apply temperature, then top-k,
then top-p, and draw with the request's own generator when it has a seed, so a seeded request
yields the same tokens whatever else shares its batch.
"""
from __future__ import annotations

import torch

from lab.engine.sampling_params import SamplingParams


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (N, V) logits to each row's top-k (0 = all) and nucleus top-p; masked entries -inf."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    ranks = torch.arange(vocab, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
    drop = ranks >= k[:, None]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # Drop a token when the mass strictly before it already reaches top_p (the first always stays).
    mass_before = probs.cumsum(dim=-1) - probs
    drop |= mass_before >= top_p[:, None]
    drop[:, 0] = False
    masked_sorted = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, masked_sorted)


class Sampler:
    def __call__(
        self,
        logits: torch.Tensor,  # (N, V) float32
        params: list[SamplingParams],
        generators: list[torch.Generator | None],
        banned_token_ids: list[list[int]] | None = None,  # e.g. EOS while below min_tokens
    ) -> list[int]:
        logits = logits.float()
        if banned_token_ids is not None:
            for row, banned in enumerate(banned_token_ids):
                if banned:
                    logits[row, banned] = float("-inf")
        out = logits.argmax(dim=-1)
        if not all(p.greedy for p in params):  # decided on the host: no device sync for a greedy batch
            greedy = torch.tensor([p.greedy for p in params], device=logits.device)
            out = torch.where(greedy, out, self._sample_random(logits, params, generators))
        return out.tolist()

    def _sample_random(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
    ) -> torch.Tensor:
        device = logits.device
        temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=device)
        top_k = torch.tensor([p.top_k for p in params], device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)
        logits = apply_top_k_top_p(logits / temperature[:, None], top_k, top_p)
        probs = logits.softmax(dim=-1)
        # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p and lets every row
        # use its own generator without a per-row multinomial call.
        noise = torch.empty_like(probs).exponential_()
        for row, gen in enumerate(generators):
            if gen is not None:
                noise[row].exponential_(generator=gen)
        return (probs / noise).argmax(dim=-1)
