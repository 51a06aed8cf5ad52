"""Building blocks shared by the models: Linear, Embedding, RMSNorm, the SwiGLU MLP, the LM head.

Contract: every block takes flat token rows (T, hidden) and returns (T, hidden), computing as
transformers does (RMSNorm in float32, weight applied after casting back), so float32 outputs
match the reference to rounding. Parameter names follow the Hugging Face checkpoints except
where two HF matrices are fused into one GEMM (gate_up_proj); `weights.py` maps the names.
RMSNorm and the SwiGLU MLP have a `fused` switch (off by default: the plain path; `set_fused_ops`
turns it on for a whole model on CUDA) that runs one Triton kernel per op (`kernels/fused_ops.py`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x W^T + b with uninitialized parameters: the loader fills them (checkpoint or dummy), and
    skipping torch's init keeps meta-device construction free (nn.Linear's init pulls in torch._refs)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            from lab.engine.kernels.fused_ops import rms_norm_triton  # CUDA only; never imported on CPU

            return rms_norm_triton(x, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def silu_and_mul(gate_up: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """(..., 2I) holding [gate | up] -> silu(gate) * up (..., I)."""
    if fused:
        from lab.engine.kernels.fused_ops import silu_and_mul_triton

        return silu_and_mul_triton(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class GatedMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); gate and up fused into one (2I, H) matrix."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x), self.fused))

    def weight_targets(self, prefix: str) -> dict[str, tuple[str, tuple]]:
        """HF names of this MLP (separate gate/up) -> (our parameter, index into it)."""
        i = self.intermediate_size
        targets = {}
        for kind in ("weight", "bias") if self.down_proj.bias is not None else ("weight",):
            targets[f"{prefix}.gate_proj.{kind}"] = (f"{prefix}.gate_up_proj.{kind}", (slice(0, i),))
            targets[f"{prefix}.up_proj.{kind}"] = (f"{prefix}.gate_up_proj.{kind}", (slice(i, 2 * i),))
            targets[f"{prefix}.down_proj.{kind}"] = (f"{prefix}.down_proj.{kind}", ())
        return targets


class LMHead(nn.Module):
    """Final projection to vocabulary logits; with tied embeddings it reuses the embedding matrix."""

    def __init__(self, hidden_size: int, vocab_size: int, tied_to: Embedding | None) -> None:
        super().__init__()
        self.tied_to = [tied_to] if tied_to is not None else None  # a list: not registered as a child twice
        self.weight = None if tied_to is not None else nn.Parameter(torch.empty(vocab_size, hidden_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.tied_to[0].weight if self.tied_to is not None else self.weight
        return F.linear(hidden, weight).float()  # (N, vocab) float32 for the sampler


def set_fused_ops(model: nn.Module, enabled: bool) -> None:
    """Switch every module with a `fused` flag (RMSNorm, GatedMLP, FusedExperts, RotaryEmbedding)."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = enabled
