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
        return self.sample(logits, params, generators, banned_token_ids).tolist()

    def sample(
        self,
        logits: torch.Tensor,  # (N, V)
        params: list[SamplingParams],
        generators: list[torch.Generator | None],
        banned_token_ids: list[list[int]] | None = None,
    ) -> torch.Tensor:
        """Like calling the sampler, but the (N,) int64 tokens stay on the device: no host sync."""
        logits = logits.float()
        if banned_token_ids is not None and any(banned_token_ids):
            rows = [row for row, banned in enumerate(banned_token_ids) for _ in banned]
            cols = [token for banned in banned_token_ids for token in banned]
            index = _host_to(torch.tensor([rows, cols], dtype=torch.long), logits.device)
            logits[index[0], index[1]] = float("-inf")  # one scatter for the whole batch
        out = logits.argmax(dim=-1)
        if not all(p.greedy for p in params):  # decided on the host: no device sync for a greedy batch
            greedy = _host_to(torch.tensor([p.greedy for p in params]), logits.device)
            out = torch.where(greedy, out, self._sample_random(logits, params, generators))
        return out

    def _sample_random(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
    ) -> torch.Tensor:
        device = logits.device
        temperature = _host_to(torch.tensor([p.temperature if not p.greedy else 1.0 for p in params]), device)
        top_k = _host_to(torch.tensor([p.top_k for p in params]), device)
        top_p = _host_to(torch.tensor([p.top_p for p in params]), device)
        logits = apply_top_k_top_p(logits / temperature[:, None], top_k, top_p)
        probs = logits.softmax(dim=-1)
        # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p and lets every row
        # use its own generator without a per-row multinomial call.
        noise = torch.empty_like(probs).exponential_()
        for row, gen in enumerate(generators):
            if gen is not None:
                noise[row].exponential_(generator=gen)
        return (probs / noise).argmax(dim=-1)


def _host_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to CUDA through pinned memory, so the copy does not wait for the GPU."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
