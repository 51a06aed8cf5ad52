"""The layers a tensor-parallel rank runs in place of the plain ones; each holds its shard and its group.

Contract (rank r of tp, `tp` a `TensorParallel`; inputs are the same on every rank, outputs too unless said):
  RowParallelLinear      y = sum_r x_r W_r^T (+ b): x_r are this rank's input columns (the heads or the
                         intermediate rows it holds), one all-reduce; the bias lives on rank 0 only, so the
                         sum adds it once. `reduce=False` leaves the partial sum to the caller (`ParallelMoE`).
  VocabParallelEmbedding rows [v0, v1) of the table: an id outside them looks up row 0 and is zeroed, then one
                         all-reduce; exactly one rank contributes each row, so the sum is the plain lookup.
  ParallelLMHead         logits of this rank's vocabulary rows, all-gathered to (N, vocab) on every rank
                         (the leader samples; the others only take part in the gather).
  ShardedExperts         the experts [e0, e1) of a `FusedExperts`: routing pairs of other ranks' experts get
                         weight 0 and run on local expert 0, so every backend (loop, grouped, Triton) runs
                         unchanged, with fixed shapes and no host sync (CUDA graphs). The price: each rank
                         computes all T*k pairs, (tp-1)/tp of them for nothing; at decode that is a re-read of
                         one expert already in L2, at prefill wasted FLOPs. Dispatching tokens to their experts'
                         ranks with an all-to-all (DeepEP's road) does no such work and scales to many ranks;
                         it needs variable-size exchanges, which this simplest correct design avoids.
  ParallelMoE            router replicated (the same ids on every rank: the input is the same all-reduced
                         hidden state), local experts + this rank's part of the shared experts, then ONE
                         all-reduce for both.
Column-parallel projections (q/k/v, gate/up, MLA's q_b and kv_b) need no class: they are plain `Linear`s
with fewer output rows, and the attention modules are told their local head counts (`shard.py`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.engine.models.layers import Embedding, GatedMLP, Linear, LMHead
from lab.engine.models.moe import DeepseekMoE, FusedExperts, MoEGate
from lab.engine.parallel.plan import Range
from lab.engine.parallel.state import TensorParallel


class RowParallelLinear(Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool, tp: TensorParallel,
                 reduce: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias and tp.is_leader)
        self.tp = tp
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self.tp.all_reduce(y) if self.reduce else y


class VocabParallelEmbedding(Embedding):
    def __init__(self, rows: Range, embedding_dim: int, tp: TensorParallel) -> None:
        super().__init__(rows.size, embedding_dim)
        self.rows = rows
        self.tp = tp

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.rows.start
        outside = (local < 0) | (local >= self.rows.size)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)  # (T, hidden)
        return self.tp.all_reduce(out.masked_fill_(outside[:, None], 0))


class ParallelLMHead(LMHead):
    def __init__(self, hidden_size: int, rows: Range, tied_to: VocabParallelEmbedding | None,
                 tp: TensorParallel) -> None:
        super().__init__(hidden_size, rows.size, tied_to)
        self.tp = tp

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.tp.all_gather_last(super().forward(hidden))  # (N, vocab / tp) -> (N, vocab) float32


class ShardedExperts(FusedExperts):
    def __init__(self, experts: Range, hidden_size: int, intermediate_size: int) -> None:
        super().__init__(experts.size, hidden_size, intermediate_size)
        self.first_expert = experts.start

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.first_expert
        other = (local < 0) | (local >= self.num_experts)  # pairs another rank computes
        return super().forward(x, weights.masked_fill(other, 0.0), local.masked_fill(other, 0))

    def weight_targets(self, prefix: str) -> dict[str, tuple[str, tuple]]:
        """HF's global expert numbers -> this rank's stacked rows (other experts never reach the loader)."""
        i, first = self.intermediate_size, self.first_expert
        targets = {}
        for e in range(self.num_experts):
            name = f"{prefix}.{first + e}"
            targets[f"{name}.gate_proj.weight"] = (f"{prefix}.w13", (e, slice(0, i)))
            targets[f"{name}.up_proj.weight"] = (f"{prefix}.w13", (e, slice(i, 2 * i)))
            targets[f"{name}.down_proj.weight"] = (f"{prefix}.w2", (e,))
        return targets


class ParallelMoE(DeepseekMoE):
    def __init__(self, gate: MoEGate, experts: ShardedExperts, shared_experts: GatedMLP | None,
                 tp: TensorParallel) -> None:
        torch.nn.Module.__init__(self)  # DeepseekMoE's constructor builds full-size parts from a config
        self.gate = gate
        self.experts = experts
        self.shared_experts = shared_experts  # its down_proj a RowParallelLinear with reduce=False
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.gate(x)
        out = self.experts(x, weights, ids)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return self.tp.all_reduce(out)
