"""The decoder-only skeleton every model shares; models only choose their attention and MLP.

Contract (what the runner calls):
    forward(input_ids (T,), positions (T,), kv_caches, meta) -> hidden (T, hidden_size)
    compute_logits(hidden (N, hidden_size)) -> (N, vocab) float32
    kv_cache_spec(dtype) -> KVCacheSpec          (also `kv_cache_spec_from_config(config, dtype)`)
    load_weights(iterable of (HF name, tensor))  -> ValueError naming missing / mis-shaped tensors
    process_weights_after_loading()              -> derived tensors (MLA's absorbed projections)
Layer i reads and writes `kv_caches[i]`. Module names mirror the HF checkpoints
(`model.layers.3.self_attn...`), so most parameters load under their own names.
With `DecoderStack.fused` on (`set_fused_ops`), the layers carry the residual stream beside the
hidden state, as vLLM does: each residual add happens inside the next RMSNorm
(`RMSNorm.add_and_norm`, one Triton kernel), so a layer runs two norm kernels and no add kernels;
at one row, a Llama-shaped layer runs them inside the qkv and gate_up GEMVs instead (`norms_in_gemv`).
Same sums, same roundings as the plain path (`DecoderLayer.forward`), which stays the oracle.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_cache import KVCacheSpec
from lab.engine.model_config import ModelConfig
from lab.engine.models.layers import GEMV_LINEAR_MAX_ROWS, Embedding, GatedMLP, LMHead, RMSNorm, takes_gemv
from lab.engine.models.rope import RotaryEmbedding, Rotation
from lab.engine.models.weights import collect_targets, load_into


NORM_PROLOGUE_MAX_K = 8192  # kernels/gemv.py NORM_MAX_K: the row must fit one K step of the GEMV


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, self_attn: nn.Module, mlp: nn.Module, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps)

    def forward(
        self, hidden: torch.Tensor, rot: Rotation, kv_cache: tuple[torch.Tensor, ...], meta: AttentionMetadata
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rot, kv_cache, meta)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))

    def forward_residual(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        rot: Rotation,
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mlp output, residual stream without it): the add is left to the next norm.
        residual None: the first layer, whose input is the whole stream."""
        if self.norms_in_gemv(hidden):
            return self._forward_norms_in_gemv(hidden, residual, rot, kv_cache, meta)
        if residual is None:
            residual, normed = hidden, self.input_layernorm(hidden)
        else:
            normed, residual = self.input_layernorm.add_and_norm(hidden, residual)
        attn = self.self_attn(normed, rot, kv_cache, meta)
        normed, residual = self.post_attention_layernorm.add_and_norm(attn, residual)
        return self.mlp(normed), residual

    def norms_in_gemv(self, hidden: torch.Tensor) -> bool:
        """One-row steps of a layer whose attention starts with one `qkv_proj` and whose MLP is SwiGLU, with
        fused ops: each RMSNorm (and the residual add before it) runs in the prologue of the GEMV that consumes
        it, two launches fewer per layer. Shapes and flags only: the same at CUDA-graph capture and replay."""
        qkv = getattr(self.self_attn, "qkv_proj", None)
        return (self.input_layernorm.fused and isinstance(self.mlp, GatedMLP) and self.mlp.fused and qkv is not None
                and hidden.shape[-1] <= NORM_PROLOGUE_MAX_K and takes_gemv(hidden, qkv.weight, GEMV_LINEAR_MAX_ROWS)
                and takes_gemv(hidden, self.mlp.gate_up_proj.weight, GEMV_LINEAR_MAX_ROWS))

    def _forward_norms_in_gemv(
        self, hidden: torch.Tensor, residual: torch.Tensor | None, rot: Rotation, kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from lab.engine.kernels.gate_up_silu import gate_up_silu_add_rms_norm  # CUDA only; never imported on CPU
        from lab.engine.kernels.gemv import gemv_add_rms_norm

        norm, qkv_proj = self.input_layernorm, self.self_attn.qkv_proj
        qkv, residual = gemv_add_rms_norm(hidden, residual, norm.weight, norm.eps, qkv_proj.weight, qkv_proj.bias)
        attn = self.self_attn.attend(qkv, rot, kv_cache, meta)
        norm, gate_up = self.post_attention_layernorm, self.mlp.gate_up_proj
        act, residual = gate_up_silu_add_rms_norm(attn, residual, norm.weight, norm.eps, gate_up.weight, gate_up.bias)
        return self.mlp.down_proj(act), residual


class DecoderStack(nn.Module):
    """HF's `model.*`: embed_tokens, layers, norm (and the rotary angles, which hold no weights)."""

    def __init__(self, config: ModelConfig, layers: list[DecoderLayer], rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = rotary_emb
        self.fused = False  # carry the residual stream (DecoderLayer.forward_residual)


class CausalLM(nn.Module):
    """Subclasses build `self.model` (a DecoderStack) and define `kv_cache_spec_from_config`."""

    # True when every non-decode step on the "triton" backend is one fixed-shape launch sequence
    # (no Python loop over the step's sequences), so `cuda_graphs.MixedGraphs` may capture it.
    supports_mixed_graphs = False

    def __init__(self, config: ModelConfig, model: DecoderStack) -> None:
        super().__init__()
        self.config = config
        self.model = model
        tied = model.embed_tokens if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.hidden_size, config.vocab_size, tied_to=tied)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        if len(kv_caches) != len(self.model.layers):
            raise ValueError(f"got {len(kv_caches)} KV caches for {len(self.model.layers)} layers")
        hidden = self.model.embed_tokens(input_ids)  # (T, hidden)
        rot = self.model.rotary_emb(positions)
        if self.model.fused:
            residual = None
            for layer, kv_cache in zip(self.model.layers, kv_caches):
                hidden, residual = layer.forward_residual(hidden, residual, rot, kv_cache, meta)
            if residual is None:  # no layers
                return self.model.norm(hidden)
            return self.model.norm.add_and_norm(hidden, residual)[0]
        for layer, kv_cache in zip(self.model.layers, kv_caches):
            hidden = layer(hidden, rot, kv_cache, meta)
        return self.model.norm(hidden)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    @classmethod
    def kv_cache_spec_from_config(cls, config: ModelConfig, dtype: torch.dtype) -> KVCacheSpec:
        raise NotImplementedError

    def kv_cache_spec(self, dtype: torch.dtype) -> KVCacheSpec:
        return self.kv_cache_spec_from_config(self.config, dtype)

    def is_ignorable_weight(self, name: str) -> bool:
        """Checkpoint tensors we knowingly skip: rotary buffers, a tied head's duplicate."""
        return name.endswith("rotary_emb.inv_freq") or (self.config.tie_word_embeddings and name == "lm_head.weight")

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        load_into(self, collect_targets(self), weights, self.is_ignorable_weight)

    def process_weights_after_loading(self) -> None:
        """Derive tensors from loaded weights; call again after replacing weights (hot reload)."""
        for module in self.modules():
            if module is not self and hasattr(module, "process_weights_after_loading"):
                module.process_weights_after_loading()
