"""Dense Llama / Qwen2 (the R1-Distill models): GQA with RoPE, RMSNorm, SwiGLU.

Contract: `LlamaForCausalLM(config)` follows `models/base.py`. Each layer caches K and V of its
KV heads, (num_kv_heads, head_dim) each per token, and attends through
`lab.engine.attention.gqa.gqa_attention`, which picks the oracle, the decode path or the prefill
path for the step (`lab/engine/attention/`). q/k/v are one
fused GEMM (`qkv_proj`); checkpoints load from HF's separate
q_proj/k_proj/v_proj (with Qwen2's q/k/v bias; the GEMV adds it in its epilogue). A tied head
reuses the embedding matrix. With fused ops on the "triton" backend, a pure-decode step rotates q
and k and writes k and v to the cache in one kernel (`takes_fused_rope_kv_write`).
"""
from __future__ import annotations

import torch
from torch import nn

from lab.engine.attention.decode import cache_write, gqa_decode_attention
from lab.engine.attention.gqa import gqa_attention
from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_cache import KVCacheSpec
from lab.engine.model_config import ModelConfig
from lab.engine.models.base import CausalLM, DecoderLayer, DecoderStack
from lab.engine.models.layers import GatedMLP, Linear
from lab.engine.models.rope import RotaryEmbedding, Rotation


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=config.o_proj_bias)
        self.scale = self.head_dim**-0.5

    def forward(
        self, hidden: torch.Tensor, rot: Rotation, kv_cache: tuple[torch.Tensor, ...], meta: AttentionMetadata
    ) -> torch.Tensor:
        return self.attend(self.qkv_proj(hidden), rot, kv_cache, meta)

    def attend(
        self, qkv: torch.Tensor, rot: Rotation, kv_cache: tuple[torch.Tensor, ...], meta: AttentionMetadata
    ) -> torch.Tensor:
        """Everything after the qkv projection: `DecoderLayer` may compute qkv with the norm in its prologue."""
        num_tokens = qkv.shape[0]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)  # (T, H, D)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)  # (T, Hkv, D)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache
        if takes_fused_rope_kv_write(rot, meta):  # decode reads k and v from the cache only
            from lab.engine.kernels.rope_kv_write import rope_kv_write_triton  # CUDA only; never imported on CPU

            q = rope_kv_write_triton(q, k, v, rot.cos, rot.sin, rot.interleaved, k_cache, v_cache, meta.slot_mapping)
            out = gqa_decode_attention(q, k_cache, v_cache, meta, self.scale)  # (T, H, D)
            return self.o_proj(out.reshape(num_tokens, self.q_size))
        q, k = rot.apply(q), rot.apply(k)
        cache_write(k_cache, meta.slot_mapping, k, meta)
        cache_write(v_cache, meta.slot_mapping, v, meta)
        out = gqa_attention(q, k, v, k_cache, v_cache, meta, self.scale)  # (T, H, D)
        return self.o_proj(out.reshape(num_tokens, self.q_size))

    def weight_targets(self, prefix: str) -> dict[str, tuple[str, tuple]]:
        """HF's q_proj / k_proj / v_proj are row blocks of our qkv_proj."""
        rows = {
            "q_proj": slice(0, self.q_size),
            "k_proj": slice(self.q_size, self.q_size + self.kv_size),
            "v_proj": slice(self.q_size + self.kv_size, self.q_size + 2 * self.kv_size),
        }
        kinds = ("weight", "bias") if self.qkv_proj.bias is not None else ("weight",)
        targets = {f"{prefix}.{hf}.{kind}": (f"{prefix}.qkv_proj.{kind}", (r,)) for hf, r in rows.items() for kind in kinds}
        for kind in ("weight", "bias") if self.o_proj.bias is not None else ("weight",):
            targets[f"{prefix}.o_proj.{kind}"] = (f"{prefix}.o_proj.{kind}", ())
        return targets


def takes_fused_rope_kv_write(rot: Rotation, meta: AttentionMetadata) -> bool:
    """RoPE + KV write as one kernel (`kernels/rope_kv_write.py`): fused ops on, Triton backend (so CUDA,
    and padding slots are skipped as `cache_write` skips them), pure decode. Step-level facts only, the
    same at CUDA-graph capture and replay."""
    return rot.fused and meta.backend == "triton" and meta.is_pure_decode


class LlamaForCausalLM(CausalLM):
    supports_mixed_graphs = True  # non-decode steps: one varlen attention kernel per layer
    def __init__(self, config: ModelConfig) -> None:
        layers = [
            DecoderLayer(
                LlamaAttention(config),
                GatedMLP(config.hidden_size, config.intermediate_size, bias=config.mlp_bias),
                config.hidden_size,
                config.rms_norm_eps,
            )
            for _ in range(config.num_hidden_layers)
        ]
        rope = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling, interleaved=False)
        super().__init__(config, DecoderStack(config, layers, rope))

    @classmethod
    def kv_cache_spec_from_config(cls, config: ModelConfig, dtype: torch.dtype,
                                  num_kv_heads: int | None = None) -> KVCacheSpec:
        kv = (num_kv_heads or config.num_key_value_heads, config.head_dim)
        return KVCacheSpec(num_layers=config.num_hidden_layers, per_token_shapes=(kv, kv), dtype=dtype)

    def kv_cache_spec(self, dtype: torch.dtype) -> KVCacheSpec:
        """The KV heads this instance holds: all of them, or a tensor-parallel rank's share (parallel/plan.py)."""
        layers = self.model.layers
        return self.kv_cache_spec_from_config(self.config, dtype, layers[0].self_attn.num_kv_heads if layers else None)
