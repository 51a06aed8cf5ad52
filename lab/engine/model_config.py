"""`ModelConfig`: the model's shape, parsed and validated from a Hugging Face config.json dict.

Contract: `ModelConfig.from_hf_dict(d)` accepts what transformers writes (v5 `rope_parameters`)
and what older checkpoints carry (`rope_scaling` + `rope_theta`), fills the defaults transformers
would fill for the model type, and raises ValueError naming the offending field. A `quantization_config`
is validated (only DeepSeek's block fp8 loads) but not stored: it says how weights are stored, not the
model's shape (`lab.engine.quant_config`; the loader reports it in `LoadedModel.quantization`). Supported model
types: qwen2 and llama (family "llama": dense GQA), deepseek_v2 and deepseek_v3 (family
"deepseek": MLA + MoE). The config is frozen; nothing derived at run time is written back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.engine.quant_config import parse_quantization_config


# HF `architectures` names and `model_type` names we serve, and the family of layers each uses.
ARCHITECTURE_TO_MODEL_TYPE = {
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
MODEL_TYPE_FAMILY = {"qwen2": "llama", "llama": "llama", "deepseek_v2": "deepseek", "deepseek_v3": "deepseek"}

# Defaults transformers' DeepseekV2Config / DeepseekV3Config (and DeepSeek's own code) use when a
# config.json leaves a field out. A field present with value null keeps None (q_lora_rank: null).
_DEEPSEEK_DEFAULTS = {
    "deepseek_v2": dict(
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=None, moe_intermediate_size=1407,
        first_k_dense_replace=0, moe_layer_freq=1, n_group=None, topk_group=None, topk_method="greedy",
        scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0, rope_interleave=True,
    ),
    "deepseek_v3": dict(
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, moe_intermediate_size=2048,
        first_k_dense_replace=3, moe_layer_freq=1, n_group=8, topk_group=4, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5, rope_interleave=True,
    ),
}
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
SCORING_FUNCS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE frequency rescaling, as transformers' `rope_parameters` names its keys."""

    rope_type: str  # "linear" | "llama3" | "yarn"
    factor: float
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0  # yarn: rotations above which dims are extrapolated (kept)
    beta_slow: float = 1.0  # yarn: rotations below which dims are interpolated (divided by factor)
    mscale: float | None = None  # yarn: cos/sin magnitude correction numerator
    mscale_all_dim: float | None = None  # yarn: denominator; DeepSeek also folds it into the softmax scale
    attention_factor: float | None = None  # yarn: explicit cos/sin magnitude, overrides mscale
    truncate: bool = True  # yarn: round the correction range to whole dims
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3


@dataclass(frozen=True)
class ModelConfig:
    model_type: str  # "qwen2" | "llama" | "deepseek_v2" | "deepseek_v3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # dense MLP width
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int  # GQA only; MLA caches one latent row per token instead
    head_dim: int  # GQA head size; for MLA the query/key head size qk_nope + qk_rope
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None  # None = plain RoPE
    max_position_embeddings: int  # the model's context length (max_model_len)
    tie_word_embeddings: bool
    qkv_bias: bool  # bias on q/k/v (Qwen2 always; Llama with attention_bias); DeepSeek: on q_a/kv_a
    o_proj_bias: bool
    mlp_bias: bool
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    # DeepSeek (MLA + MoE); None on the llama family
    q_lora_rank: int | None = None  # None: a plain q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    n_routed_experts: int | None = None
    n_shared_experts: int = 0
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "greedy"
    scoring_func: str = "softmax"
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    rope_interleave: bool = False  # rotate (x0, x1), (x2, x3)... pairs instead of the two halves
    num_nextn_predict_layers: int = 0  # DeepSeek-V3 MTP layers stored after the last layer (not run)

    @property
    def family(self) -> str:
        return MODEL_TYPE_FAMILY[self.model_type]

    @property
    def max_model_len(self) -> int:
        return self.max_position_embeddings

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.family == "deepseek" else self.head_dim

    @property
    def rotary_dim(self) -> int:
        return self.qk_rope_head_dim if self.family == "deepseek" else self.head_dim

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def is_moe_layer(self, layer: int) -> bool:
        """DeepSeek's rule: MoE from layer first_k_dense_replace on, every moe_layer_freq-th layer."""
        return (
            self.family == "deepseek"
            and bool(self.n_routed_experts)
            and layer >= self.first_k_dense_replace
            and layer % self.moe_layer_freq == 0
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, overrides: dict | None = None) -> "ModelConfig":
        file = Path(path) / "config.json"
        if not file.is_file():
            raise ValueError(f"{path} has no config.json")
        return cls.from_hf_dict({**json.loads(file.read_text()), **(overrides or {})})

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        model_type = _resolve_model_type(d)
        family = MODEL_TYPE_FAMILY[model_type]
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act={act!r} is not supported; only 'silu' (SwiGLU) is")
        # Block fp8 (DeepSeek-V3/R1) is a storage format the loader dequantizes: checked here, kept out of
        # the shape, so a bf16 and an fp8 checkpoint of one model have equal configs (hot reload compares them).
        parse_quantization_config(d)
        if d.get("use_sliding_window"):
            raise ValueError("use_sliding_window=True is not supported (sliding-window attention)")
        heads = _req(d, "num_attention_heads")
        eos = d.get("eos_token_id")
        common = dict(
            model_type=model_type,
            vocab_size=_req(d, "vocab_size"),
            hidden_size=_req(d, "hidden_size"),
            intermediate_size=_req(d, "intermediate_size"),
            num_hidden_layers=_req(d, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=_req(d, "max_position_embeddings"),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            mlp_bias=bool(d.get("mlp_bias", False)),
            eos_token_ids=tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),)),
            bos_token_id=d.get("bos_token_id"),
        )
        theta, scaling = parse_rope(d)
        common.update(rope_theta=theta, rope_scaling=scaling)
        if family == "llama":
            bias = bool(d.get("attention_bias", False))
            cfg = cls(
                **common,
                head_dim=d.get("head_dim") or common["hidden_size"] // heads,
                qkv_bias=True if model_type == "qwen2" else bias,  # Qwen2 always has q/k/v bias
                o_proj_bias=False if model_type == "qwen2" else bias,
            )
        else:
            ds = {k: (d[k] if k in d else v) for k, v in _DEEPSEEK_DEFAULTS[model_type].items()}
            if model_type == "deepseek_v2":
                ds["rope_interleave"] = True  # V2 rotates pairs (complex multiply), no flag in its config
            ds["num_nextn_predict_layers"] = int(d.get("num_nextn_predict_layers") or d.get("num_mtp_layers") or 0)
            ds["n_group"] = ds["n_group"] or 1
            ds["topk_group"] = ds["topk_group"] or 1
            bias = bool(d.get("attention_bias", False))
            cfg = cls(
                **common,
                head_dim=ds["qk_nope_head_dim"] + ds["qk_rope_head_dim"],
                qkv_bias=bias,
                o_proj_bias=bias,
                **ds,
            )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        positive = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings"]
        if self.family == "deepseek":
            positive += ["kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary dimension must be even, got {self.rotary_dim}")
        if self.family == "llama" and self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.family == "deepseek":
            self._validate_moe()

    def _validate_moe(self) -> None:
        if self.q_lora_rank is not None and self.q_lora_rank < 1:
            raise ValueError(f"q_lora_rank must be a positive integer or null, got {self.q_lora_rank!r}")
        if self.moe_layer_freq < 1:
            raise ValueError(f"moe_layer_freq must be >= 1, got {self.moe_layer_freq}")
        if not self.n_routed_experts:
            return  # an all-dense DeepSeek
        if not self.num_experts_per_tok or not self.moe_intermediate_size:
            raise ValueError("num_experts_per_tok and moe_intermediate_size are required with n_routed_experts")
        if self.topk_method not in TOPK_METHODS:
            raise ValueError(f"topk_method={self.topk_method!r} is not supported; expected one of {TOPK_METHODS}")
        if self.scoring_func not in SCORING_FUNCS:
            raise ValueError(f"scoring_func={self.scoring_func!r} is not supported; expected one of {SCORING_FUNCS}")
        if self.n_routed_experts % self.n_group:
            raise ValueError(f"n_routed_experts ({self.n_routed_experts}) must be divisible by n_group ({self.n_group})")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"topk_group ({self.topk_group}) must be in [1, n_group={self.n_group}]")
        per_group = self.n_routed_experts // self.n_group
        reachable = self.topk_group * per_group if self.topk_method != "greedy" else self.n_routed_experts
        if not 1 <= self.num_experts_per_tok <= reachable:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be in [1, {reachable}] "
                f"(experts reachable through topk_group={self.topk_group} of n_group={self.n_group})"
            )
        if self.topk_method == "noaux_tc" and per_group < 2:
            raise ValueError("topk_method='noaux_tc' scores a group by its top-2 experts: need >= 2 experts per group")


def _resolve_model_type(d: dict[str, Any]) -> str:
    model_type = d.get("model_type")
    if model_type in MODEL_TYPE_FAMILY:
        return model_type
    for arch in d.get("architectures") or []:
        if arch in ARCHITECTURE_TO_MODEL_TYPE:
            return ARCHITECTURE_TO_MODEL_TYPE[arch]
    raise ValueError(
        f"unsupported model: model_type={model_type!r}, architectures={d.get('architectures')!r}; "
        f"supported model types: {sorted(MODEL_TYPE_FAMILY)}, architectures: {sorted(ARCHITECTURE_TO_MODEL_TYPE)}"
    )


def _req(d: dict[str, Any], key: str) -> Any:
    if d.get(key) is None:
        raise ValueError(f"config is missing required field {key!r}")
    return d[key]


def parse_rope(d: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from transformers-5 `rope_parameters` or legacy `rope_scaling` + `rope_theta`."""
    params = dict(d.get("rope_parameters") or {})
    legacy = d.get("rope_scaling") or {}
    if params and any(isinstance(v, dict) for v in params.values()):
        raise ValueError("rope_parameters per layer type (nested dicts) are not supported")
    params = {**legacy, **params}
    theta = float(params.get("rope_theta") or d.get("rope_theta") or 10000.0)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope type {rope_type!r} is not supported; expected one of {ROPE_TYPES}")
    if rope_type == "default":
        return theta, None
    factor = params.get("factor")
    original = params.get("original_max_position_embeddings") or d.get("original_max_position_embeddings")
    if rope_type in ("llama3", "yarn") and original is None:
        original = d.get("max_position_embeddings")  # as transformers' standardize_rope_params does
    if factor is None:
        if rope_type != "yarn":
            raise ValueError(f"rope type {rope_type!r} needs a 'factor'")
        factor = d["max_position_embeddings"] / original  # transformers' yarn fallback
    if float(factor) <= 0:
        raise ValueError(f"rope factor must be positive, got {factor}")
    opt = {k: params[k] for k in ("beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor") if params.get(k)}
    return theta, RopeScaling(
        rope_type=rope_type,
        factor=float(factor),
        original_max_position_embeddings=int(original) if original is not None else None,
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        attention_factor=params.get("attention_factor"),
        truncate=bool(params.get("truncate", True)),
        **{k: float(v) for k, v in opt.items()},
    )
