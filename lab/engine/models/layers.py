"""Building blocks shared by the models: Linear, Embedding, RMSNorm, the SwiGLU MLP, the LM head.

Contract: every block takes flat token rows (T, hidden) and returns (T, hidden), computing as
transformers does (RMSNorm in float32, weight applied after casting back), so float32 outputs
match the reference to rounding. Parameter names follow the Hugging Face checkpoints except
where two HF matrices are fused into one GEMM (gate_up_proj); `weights.py` maps the names.
RMSNorm, the SwiGLU MLP, Linear and the LM head have a `fused` switch (off by default: the plain
path; `set_fused_ops` turns it on for a whole model on CUDA) that runs Triton kernels instead:
one kernel per elementwise op (`kernels/fused_ops.py`), and for Linear / LMHead with at most
`gemv.MAX_M` rows of 16-bit input a bandwidth-bound skinny GEMM (`kernels/gemv.py`) in place of
cuBLAS, which reads weights at about half the card's bandwidth at batch 1. At the rows where Linear
takes the GEMV, the SwiGLU MLP runs gate_up and SiLU-mul as one kernel (`kernels/gate_up_silu.py`).
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
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and takes_gemv(x, self.weight, GEMV_LINEAR_MAX_ROWS):
            from lab.engine.kernels.gemv import gemv  # CUDA only; never imported on CPU

            return gemv(x.reshape(-1, x.shape[-1]), self.weight, self.bias).view(*x.shape[:-1], -1)
        return F.linear(x, self.weight, self.bias)


GEMV_MAX_ROWS = 16  # kernels/gemv.py MAX_M: decode-sized batches; larger ones are cuBLAS's
# Measured on an H200 (scratch/bench_gemv.py): the kernel beats cuBLAS at one row for every
# projection, but at 4-16 rows only for the LM head (vocab-sized N); Linear stops at one row.
GEMV_LINEAR_MAX_ROWS = 1
GEMV_DTYPES = (torch.bfloat16, torch.float16)


def takes_gemv(
    x: torch.Tensor, weight: torch.Tensor, max_rows: int = GEMV_MAX_ROWS, weight_dtype: torch.dtype | None = None
) -> bool:
    """Whether the skinny-GEMM kernel runs x @ weight^T: CUDA, 16-bit x, at most `max_rows` rows, a weight
    of x's dtype (or of `weight_dtype`: the MoE router's float32). Shapes and dtypes only, so the choice is
    the same at CUDA-graph capture and replay."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return (x.is_cuda and x.dtype in GEMV_DTYPES and weight.dtype == (weight_dtype or x.dtype)
            and 0 < rows <= max_rows)


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

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(residual + x), residual + x). Fused: one kernel that updates `residual` in place."""
        if self.fused and x.dtype == residual.dtype and x.shape == residual.shape and residual.dim() == 2:
            from lab.engine.kernels.fused_ops import add_rms_norm_triton

            return add_rms_norm_triton(x, residual, self.weight, self.eps)
        residual = residual + x
        return self(residual), residual


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
        if self.fused and takes_gemv(x, self.gate_up_proj.weight, GEMV_LINEAR_MAX_ROWS):
            from lab.engine.kernels.gate_up_silu import gate_up_silu  # CUDA only; never imported on CPU

            # one GEMV whose epilogue applies SiLU-mul: no (T, 2I) intermediate, no activation launch
            act = gate_up_silu(x.reshape(-1, x.shape[-1]), self.gate_up_proj.weight, self.gate_up_proj.bias)
            return self.down_proj(act.view(*x.shape[:-1], -1))
        return self.down_proj(silu_and_mul(self.gate_up_proj(x), self.fused))

    def weight_targets(self, prefix: str) -> dict[str, tuple[str, tuple]]:
        """HF names of this MLP (separate gate/up) -> (our parameter, index into it)."""
        i = self.intermediate_size
        targets = {}
        for kind in ("weight", "bias") if self.gate_up_proj.bias is not None else ("weight",):
            targets[f"{prefix}.gate_proj.{kind}"] = (f"{prefix}.gate_up_proj.{kind}", (slice(0, i),))
            targets[f"{prefix}.up_proj.{kind}"] = (f"{prefix}.gate_up_proj.{kind}", (slice(i, 2 * i),))
        # down's bias apart: a tensor-parallel rank other than 0 holds none (parallel/layers.py RowParallelLinear)
        for kind in ("weight", "bias") if self.down_proj.bias is not None else ("weight",):
            targets[f"{prefix}.down_proj.{kind}"] = (f"{prefix}.down_proj.{kind}", ())
        return targets


class LMHead(nn.Module):
    """Final projection to vocabulary logits; with tied embeddings it reuses the embedding matrix."""

    def __init__(self, hidden_size: int, vocab_size: int, tied_to: Embedding | None) -> None:
        super().__init__()
        self.tied_to = [tied_to] if tied_to is not None else None  # a list: not registered as a child twice
        self.weight = None if tied_to is not None else nn.Parameter(torch.empty(vocab_size, hidden_size))
        self.fused = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.tied_to[0].weight if self.tied_to is not None else self.weight
        if self.fused and hidden.dim() == 2 and takes_gemv(hidden, weight):
            from lab.engine.kernels.gemv import gemv

            # float32 straight from the accumulator: no bf16 rounding of the logits, no cast kernel
            return gemv(hidden, weight, out_dtype=torch.float32)
        return F.linear(hidden, weight).float()  # (N, vocab) float32 for the sampler


def set_fused_ops(model: nn.Module, enabled: bool) -> None:
    """Switch every module with a `fused` flag (RMSNorm, GatedMLP, Linear, LMHead, FusedExperts,
    RotaryEmbedding, DecoderStack)."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = enabled
