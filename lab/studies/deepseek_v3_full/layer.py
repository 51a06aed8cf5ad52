"""One dense and one MoE DeepSeek-V3 decoder layer built from the engine's own modules, with the engine's fast paths.

Contract: `build_layers(LayerConfig) -> BuiltLayers` loads the `preset` (default `deepseek-v3-layers`: V3's true
shapes) cut to two layers (layer 0 dense, layer 1 MoE: `num_hidden_layers=2, first_k_dense_replace=1` on top of
`hf_overrides`, which the smoke uses for tiny shapes) with seeded dummy weights through `lab.engine.loader`, so
weights are initialized, quantized and post-processed exactly as the engine does; `weights="fp8"` is the engine's
`quantization="fp8"`. The attention backend, MoE backend and fused ops are what `EngineArgs` resolves for the
device, as `LLMEngine` applies them. The embedding table is dropped (not timed; 1.9 GB at V3's size); the LM head
is kept and timed as the "head" component. `weight_storage(built)` says what each part is stored in: under the
engine's fp8 the MLA projections but kv_b_proj, the dense MLP and the shared expert are `Fp8Linear`s, while the
routed experts stay in the engine dtype (rounded through block fp8), so an fp8 MoE layer is *not* half the bytes.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch
from torch import nn

from lab.engine.args import EngineArgs
from lab.engine.loader import load_model
from lab.engine.model_config import ModelConfig
from lab.engine.models.layers import set_fused_ops
from lab.engine.models.moe import set_moe_backend
from lab.engine.models.quant_linear import QUANT_LINEARS


@dataclass(frozen=True)
class LayerConfig:
    preset: str = "deepseek-v3-layers"
    hf_overrides: dict = field(default_factory=dict)  # e.g. tiny shapes for the CPU smoke
    weights: str = "bf16"  # "bf16" or "fp8" (the engine's quantization="fp8")
    device: str = "auto"
    seed: int = 0
    block_size: int = 16  # the engine's default KV block

    def __post_init__(self) -> None:
        if self.weights not in ("bf16", "fp8"):
            raise ValueError(f"weights must be 'bf16' or 'fp8' (the engine's quantization), got {self.weights!r}")


@dataclass
class BuiltLayers:
    dense: nn.Module  # DecoderLayer with a GatedMLP
    moe: nn.Module  # DecoderLayer with a DeepseekMoE
    head: nn.Module  # LMHead
    rotary: nn.Module
    config: ModelConfig
    device: torch.device
    dtype: torch.dtype
    attention_backend: str
    moe_backend: str
    fused_ops: bool
    weights: str
    block_size: int


def build_layers(cfg: LayerConfig) -> BuiltLayers:
    args = EngineArgs(device=cfg.device, block_size=cfg.block_size)
    device = args.resolve_device()
    dtype = args.resolve_dtype(device)
    overrides = {**cfg.hf_overrides, "num_hidden_layers": 2, "first_k_dense_replace": 1}
    loaded = load_model(cfg.preset, dtype, device, cfg.seed, overrides,
                        quantization="fp8" if cfg.weights == "fp8" else None)
    model = loaded.module
    moe_backend = args.resolve_moe_backend(device)
    set_moe_backend(model, moe_backend)
    fused = args.use_fused_ops(device)
    set_fused_ops(model, fused)
    model.model.embed_tokens = None  # never timed: a lookup
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    dense, moe = model.model.layers
    return BuiltLayers(dense, moe, model.lm_head, model.model.rotary_emb, loaded.config, device, dtype,
                       args.resolve_attention_backend(device), moe_backend, fused, cfg.weights, cfg.block_size)


def _storage(module: nn.Module) -> str:
    if isinstance(module, QUANT_LINEARS):
        return str(module.weight.dtype).replace("torch.", "")
    return str(next(module.parameters()).dtype).replace("torch.", "")


def weight_storage(built: BuiltLayers) -> dict[str, str]:
    """Storage dtype of each timed part's weights, read off the modules (what the record states)."""
    attn, mlp, moe = built.dense.self_attn, built.dense.mlp, built.moe.mlp
    return {"attention_q_a_proj": _storage(attn.q_a_proj), "attention_kv_b_proj": _storage(attn.kv_b_proj),
            "attention_o_proj": _storage(attn.o_proj), "dense_mlp": _storage(mlp.gate_up_proj),
            "router": str(moe.gate.weight.dtype).replace("torch.", ""),
            "routed_experts": str(moe.experts.w13.dtype).replace("torch.", ""),
            "shared_experts": _storage(moe.shared_experts.gate_up_proj), "head": _storage(built.head)}
