"""Bytes a decode step must read, and the HBM roofline it implies.

Decode roofline: t_step >= (W + B * L_avg * kv_bytes_per_token) / BW, tokens/s = B / t_step.
W counts the weights a step actually reads: every parameter except the embedding table (a step
looks up only B of its rows), and for MoE layers only the routed experts that some token of the
batch selects. With top-k of E experts chosen per token, the expected number of distinct experts
hit by B tokens is E * (1 - (1 - k/E)^B), assuming uniform routing (dummy weights route close to
uniformly; real checkpoints are somewhat skewed, which lowers it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.engine.models.moe import FusedExperts


@dataclass(frozen=True)
class StepBytes:
    weight_bytes: float  # W: weights read per step at this batch
    kv_bytes: float  # B * L_avg * kv_bytes_per_token
    dense_weight_bytes: float  # every weight but the embedding table and routed experts
    expert_bytes_read: float  # routed experts' share of W

    @property
    def total(self) -> float:
        return self.weight_bytes + self.kv_bytes


def expected_active_experts(num_experts: int, top_k: int, batch: int) -> float:
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def step_bytes(model: torch.nn.Module, kv_bytes_per_token: int, batch: int, avg_context: float) -> StepBytes:
    """Bytes one decode step of `batch` sequences with `avg_context` tokens each reads from HBM."""
    experts = [m for m in model.modules() if isinstance(m, FusedExperts)]
    expert_params = {id(p) for m in experts for p in m.parameters()}
    embed = model.model.embed_tokens.weight
    tied = getattr(model.lm_head, "tied_to", None) is not None  # the head reads the embedding matrix in full
    dense = sum(_nbytes(p) for p in model.parameters() if id(p) not in expert_params and (tied or p is not embed))
    dense += batch * embed.shape[1] * embed.element_size()  # the looked-up rows
    routed = 0.0
    cfg = getattr(model, "config", None)
    for m in experts:
        per_expert = (_nbytes(m.w13) + _nbytes(m.w2)) / m.num_experts
        routed += per_expert * expected_active_experts(m.num_experts, cfg.num_experts_per_tok, batch)
    return StepBytes(
        weight_bytes=dense + routed,
        kv_bytes=batch * avg_context * kv_bytes_per_token,
        dense_weight_bytes=dense,
        expert_bytes_read=routed,
    )


def roofline_step_s(nbytes: StepBytes, bandwidth: float) -> float:
    """The least time a step can take when it only has to read its bytes once at peak bandwidth."""
    return nbytes.total / bandwidth
