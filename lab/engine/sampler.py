"""Token sampling from a batch of logits, each row with its own `SamplingParams`.

Greedy rows take the argmax (the reference path). Random rows apply temperature, then top-k,
then top-p, and draw with the request's own generator when it has a seed, so a seeded request
yields the same tokens whatever else shares its batch. Unseeded rows on CUDA draw from the sampler's own
generator, never the device's default one: every CUDA graph capture puts the default generator in capture
mode, and a draw from it outside that capture then raises, which a hot reload's capture on another thread
(`lab.engine.weight_rebind`) would make of every unseeded step meanwhile.

Logprobs: rows whose params ask for them (`SamplingParams.logprobs`) get the log_softmax of their
raw logits (vLLM's default, before temperature, top-k/top-p and bans), the sampled token's entry
and the k largest. They stay on the device; the runner takes them with `take_logprobs()` right
after the call and hands them on with the step's tokens (`LaunchedStep`), read on the host once the
tokens are, so a step costs no extra sync. A batch where no row asks computes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.engine.outputs import TokenLogprob
from lab.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class SampledLogprobs:
    """The logprobs of one sampler call's rows that asked for them (device tensors until `by_row`)."""

    rows: list[int]  # rows of the call's batch, ascending
    num_top: list[int]  # each row's k
    token_ids: torch.Tensor  # (R,) the sampled tokens
    chosen: torch.Tensor  # (R,) their logprobs
    top_ids: torch.Tensor  # (R, K) K = max(num_top), best first
    top_logprobs: torch.Tensor  # (R, K)

    def by_row(self) -> dict[int, TokenLogprob]:
        """{batch row: its TokenLogprob}; reads the tensors on the host (waits for the step)."""
        ids, chosen = self.token_ids.tolist(), self.chosen.tolist()
        top_ids, top_lps = self.top_ids.tolist(), self.top_logprobs.tolist()
        return {
            row: TokenLogprob(ids[i], chosen[i], tuple(zip(top_ids[i][:k], top_lps[i][:k])))
            for i, (row, k) in enumerate(zip(self.rows, self.num_top))
        }

    def by_request(self, request_ids: list[str]) -> dict[str, TokenLogprob]:
        """{request id: its TokenLogprob}, `request_ids` naming the call's rows in order."""
        return {request_ids[row]: logprob for row, logprob in self.by_row().items()}


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
    def __init__(self) -> None:
        self._logprobs: SampledLogprobs | None = None  # the last call's, until taken
        self._unseeded: dict[torch.device, torch.Generator] = {}  # CUDA device -> the generator of unseeded rows

    def _unseeded_generator(self, device: torch.device) -> torch.Generator | None:
        if device.type != "cuda":
            return None  # the CPU's default generator: no graph ever captures it
        gen = self._unseeded.get(device)
        if gen is None:
            gen = self._unseeded[device] = torch.Generator(device=device)
            gen.seed()  # nondeterministic, as the default generator's draws were
        return gen

    def take_logprobs(self) -> SampledLogprobs | None:
        """The logprobs of the last call (None when no row asked), once: taking them clears them."""
        taken, self._logprobs = self._logprobs, None
        return taken

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
        asking = [(row, p.logprobs) for row, p in enumerate(params) if p.logprobs is not None]
        # Before the bans below write -inf into `logits` (in place): logprobs are of the raw logits.
        raw = logits[[row for row, _ in asking]].log_softmax(dim=-1) if asking else None
        if banned_token_ids is not None and any(banned_token_ids):
            rows = [row for row, banned in enumerate(banned_token_ids) for _ in banned]
            cols = [token for banned in banned_token_ids for token in banned]
            index = _host_to(torch.tensor([rows, cols], dtype=torch.long), logits.device)
            logits[index[0], index[1]] = float("-inf")  # one scatter for the whole batch
        out = logits.argmax(dim=-1)
        if not all(p.greedy for p in params):  # decided on the host: no device sync for a greedy batch
            greedy = _host_to(torch.tensor([p.greedy for p in params]), logits.device)
            out = torch.where(greedy, out, self._sample_random(logits, params, generators))
        self._logprobs = None if raw is None else _gather_logprobs(raw, asking, out)
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
        noise = torch.empty_like(probs).exponential_(generator=self._unseeded_generator(device))
        for row, gen in enumerate(generators):
            if gen is not None:
                noise[row].exponential_(generator=gen)
        return (probs / noise).argmax(dim=-1)


def _gather_logprobs(raw: torch.Tensor, asking: list[tuple[int, int]], out: torch.Tensor) -> SampledLogprobs:
    """raw: (R, V) log_softmax of the asking rows; out: (N,) the whole batch's sampled tokens."""
    rows = [row for row, _ in asking]
    num_top = [k for _, k in asking]
    token_ids = out[rows]  # (R,)
    chosen = raw.gather(1, token_ids[:, None])[:, 0]
    top_logprobs, top_ids = raw.topk(max(num_top), dim=-1)  # (R, K), sorted best first
    return SampledLogprobs(rows, num_top, token_ids, chosen, top_ids, top_logprobs)


def _host_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to CUDA through pinned memory, so the copy does not wait for the GPU."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
