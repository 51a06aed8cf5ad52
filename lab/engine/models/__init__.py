"""Model registry: a `ModelConfig`'s model type (from HF `model_type` / `architectures`) -> class.

Contract: `get_model_class(config)` returns the class that builds the model; `kv_cache_spec_for`
sizes the cache from the config alone (no weights). Every class follows `models/base.py`.
Supported: Qwen2ForCausalLM / LlamaForCausalLM (dense GQA) and DeepseekV2ForCausalLM /
DeepseekV3ForCausalLM (MLA + MoE).
"""
from __future__ import annotations

import torch

from lab.engine.kv_cache import KVCacheSpec
from lab.engine.model_config import ModelConfig
from lab.engine.models.base import CausalLM
from lab.engine.models.deepseek import DeepseekForCausalLM
from lab.engine.models.llama import LlamaForCausalLM

MODEL_REGISTRY: dict[str, type[CausalLM]] = {
    "qwen2": LlamaForCausalLM,
    "llama": LlamaForCausalLM,
    "deepseek_v2": DeepseekForCausalLM,
    "deepseek_v3": DeepseekForCausalLM,
}


def get_model_class(config: ModelConfig) -> type[CausalLM]:
    return MODEL_REGISTRY[config.model_type]


def kv_cache_spec_for(config: ModelConfig, dtype: torch.dtype) -> KVCacheSpec:
    return get_model_class(config).kv_cache_spec_from_config(config, dtype)


__all__ = ["MODEL_REGISTRY", "CausalLM", "DeepseekForCausalLM", "LlamaForCausalLM", "get_model_class", "kv_cache_spec_for"]
