"""DeepSeek-V2 / V3 decoder: MLA attention in every layer, MoE MLPs after the first dense ones.

Contract: `DeepseekForCausalLM(config)` follows `models/base.py` and serves both
DeepseekV2ForCausalLM and DeepseekV3ForCausalLM checkpoints (they differ only in config: router
scoring, grouping, rope layout). Layer i is MoE when `config.is_moe_layer(i)` (from
first_k_dense_replace on, every moe_layer_freq-th), else a dense SwiGLU of intermediate_size.
The KV cache holds one latent row per token and layer: (kv_lora_rank + qk_rope_head_dim,).
Checkpoint tensors of DeepSeek-V3's multi-token-prediction layers (`model.layers.{L}...` for the
num_nextn_predict_layers layers after the last one) are skipped: this engine does not speculate.
"""
from __future__ import annotations

import re

import torch

from lab.engine.kv_cache import KVCacheSpec
from lab.engine.model_config import ModelConfig
from lab.engine.models.base import CausalLM, DecoderLayer, DecoderStack
from lab.engine.models.layers import GatedMLP
from lab.engine.models.mla import MLA_MODES, MLAttention
from lab.engine.models.moe import DeepseekMoE
from lab.engine.models.rope import RotaryEmbedding

_LAYER_INDEX = re.compile(r"^model\.layers\.(\d+)\.")


class DeepseekForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig) -> None:
        layers = []
        for i in range(config.num_hidden_layers):
            if config.is_moe_layer(i):
                mlp = DeepseekMoE(config)
            else:
                mlp = GatedMLP(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
            layers.append(DecoderLayer(MLAttention(config), mlp, config.hidden_size, config.rms_norm_eps))
        rope = RotaryEmbedding(
            config.qk_rope_head_dim, config.rope_theta, config.rope_scaling, interleaved=config.rope_interleave
        )
        super().__init__(config, DecoderStack(config, layers, rope))

    @classmethod
    def kv_cache_spec_from_config(cls, config: ModelConfig, dtype: torch.dtype) -> KVCacheSpec:
        latent = (config.kv_lora_rank + config.qk_rope_head_dim,)
        groups = ((config.kv_lora_rank, config.qk_rope_head_dim),)  # an 8-bit cache scales c_kv and k_pe apart
        return KVCacheSpec(num_layers=config.num_hidden_layers, per_token_shapes=(latent,), dtype=dtype,
                           scale_groups=groups)

    def is_ignorable_weight(self, name: str) -> bool:
        match = _LAYER_INDEX.match(name)
        if match:
            first_mtp = self.config.num_hidden_layers
            if first_mtp <= int(match.group(1)) < first_mtp + self.config.num_nextn_predict_layers:
                return True
        return super().is_ignorable_weight(name)

    def set_mla_mode(self, mode: str) -> None:
        """"auto" (absorbed for decode steps), "absorbed" or "expanded", for every layer."""
        if mode not in MLA_MODES:
            raise ValueError(f"MLA mode must be one of {MLA_MODES}, got {mode!r}")
        for layer in self.model.layers:
            layer.self_attn.mode = mode
