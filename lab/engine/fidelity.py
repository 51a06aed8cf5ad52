"""How far 8-bit weights move a model: per-layer weight error, logits cosine and KL, greedy-token agreement.

Contract (torch only; the reference is the bf16/float model, "quant" the quantized one):
- `weight_errors(quant, ref) -> {name: relative error}`: ||W_q - W_ref||_F / ||W_ref||_F for every tensor
  both dicts hold (e.g. `weight_quant.dense_weights(module)` of two models); a name in one only is a
  ValueError naming it, as are mismatched shapes. A zero reference gives inf unless the other is zero too (0).
- `logits_cosine(ref, quant) -> (N,)`: cosine similarity of each row's logits (N, vocab).
- `kl_divergence(ref, quant) -> (N,)`: KL(P_ref || P_quant) per row, in nats, from logits (log-softmax in
  float64, so a row equal to itself gives exactly 0).
- `greedy_agreement(ref_tokens, quant_tokens) -> GreedyAgreement`: over prompts' generated token lists,
  `token_match` = matching positions / compared positions (each pair compared over the shorter length), and
  `first_divergence` = per prompt, the index of the first differing token (None when all compared tokens match);
  `exact_prompts` = prompts whose whole sequences match.
- `FidelityReport.from_outputs(...)` gathers them into one JSON-able record (`to_dict`).
What this measures on dummy weights is the quantization noise of random matrices, not of a trained model:
say so where it is reported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


def weight_errors(quant: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    only = sorted(set(quant) ^ set(ref))
    if only:
        raise ValueError(f"weights present in one model only: {only[:5]}")
    out = {}
    for name in sorted(ref):
        r, q = ref[name].double(), quant[name].double().to(ref[name].device)
        if r.shape != q.shape:
            raise ValueError(f"{name}: quantized {tuple(q.shape)} vs reference {tuple(r.shape)}")
        diff, norm = (q - r).norm().item(), r.norm().item()
        out[name] = diff / norm if norm else (0.0 if diff == 0 else float("inf"))
    return out


def logits_cosine(ref: torch.Tensor, quant: torch.Tensor) -> torch.Tensor:
    _check_logits(ref, quant)
    return torch.nn.functional.cosine_similarity(ref.double(), quant.double(), dim=-1)


def kl_divergence(ref: torch.Tensor, quant: torch.Tensor) -> torch.Tensor:
    _check_logits(ref, quant)
    log_p, log_q = torch.log_softmax(ref.double(), dim=-1), torch.log_softmax(quant.double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp(min=0.0)  # >= 0; rounding may dip below


def _check_logits(ref: torch.Tensor, quant: torch.Tensor) -> None:
    if ref.shape != quant.shape or ref.dim() != 2:
        raise ValueError(f"logits must be two (N, vocab) tensors of one shape, got {tuple(ref.shape)} and "
                         f"{tuple(quant.shape)}")


@dataclass(frozen=True)
class GreedyAgreement:
    token_match: float
    exact_prompts: int
    num_prompts: int
    first_divergence: list[int | None]


def greedy_agreement(ref_tokens: list[list[int]], quant_tokens: list[list[int]]) -> GreedyAgreement:
    if len(ref_tokens) != len(quant_tokens):
        raise ValueError(f"{len(ref_tokens)} reference sequences vs {len(quant_tokens)} quantized ones")
    matched = compared = exact = 0
    first: list[int | None] = []
    for ref, quant in zip(ref_tokens, quant_tokens):
        n = min(len(ref), len(quant))
        same = [a == b for a, b in zip(ref[:n], quant[:n])]
        matched += sum(same)
        compared += n
        exact += int(list(ref) == list(quant))
        first.append(same.index(False) if False in same else None)
    return GreedyAgreement(matched / compared if compared else 1.0, exact, len(ref_tokens), first)


@dataclass(frozen=True)
class FidelityReport:
    cosine_min: float
    cosine_mean: float
    kl_mean: float
    kl_max: float
    token_match: float
    exact_prompts: int
    num_prompts: int
    weight_error_max: float | None
    weight_error_mean: float | None

    @classmethod
    def from_outputs(cls, ref_logits: torch.Tensor, quant_logits: torch.Tensor, ref_tokens: list[list[int]],
                     quant_tokens: list[list[int]], weight_error: dict[str, float] | None = None) -> FidelityReport:
        cos, kl = logits_cosine(ref_logits, quant_logits), kl_divergence(ref_logits, quant_logits)
        agree = greedy_agreement(ref_tokens, quant_tokens)
        errors = list((weight_error or {}).values())
        return cls(cos.min().item(), cos.mean().item(), kl.mean().item(), kl.max().item(), agree.token_match,
                   agree.exact_prompts, agree.num_prompts, max(errors) if errors else None,
                   sum(errors) / len(errors) if errors else None)

    def to_dict(self) -> dict:
        return asdict(self)
