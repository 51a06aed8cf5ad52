"""DeepSeek-V3/R1 architecture arithmetic: parameters, weight bytes and KV bytes from the config.

Contract: `ModelShape` holds the numbers of a DeepSeek-V3-style Hugging Face config (`from_hf_config`
reads one, e.g. `lab.engine.presets.PRESETS["deepseek-v3-layers"].hf_config` with its layer count
overridden; `DEEPSEEK_V3` is the 61-layer model, checked against that preset in the tests: lab.scale
may not import lab.engine). Every count comes from one list of weight matrices per component
(`matrices`), so parameters, bf16 bytes and block-FP8 bytes cannot disagree. Counts exclude the
multi-token-prediction module (as the published 671B total / 37B activated do).
Block FP8 (V3's checkpoint format): the linear layers of attention and MLPs/experts are FP8 (1 byte)
with one float32 scale per 128x128 block; embeddings, the LM head, the router and norms stay bf16.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BF16_BYTES = 2
FP8_BYTES = 1
FP8_BLOCK = 128  # V3's weight-quantization block: 128x128 weights share one scale
FP8_SCALE_BYTES = 4  # the scales are float32 (`weight_scale_inv` in the checkpoint)
WEIGHT_FORMATS = ("bf16", "fp8-block")
COMPONENTS = ("attention", "dense_mlp", "router", "routed_experts", "shared_experts", "norms", "embedding", "head")


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    first_dense_layers: int
    num_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    dense_intermediate: int
    moe_intermediate: int
    routed_experts: int
    shared_experts: int
    experts_per_token: int
    vocab_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.first_dense_layers <= self.num_layers:
            raise ValueError(f"first_dense_layers {self.first_dense_layers} not within 0..{self.num_layers} layers")
        if not 1 <= self.experts_per_token <= self.routed_experts:
            raise ValueError(f"experts_per_token {self.experts_per_token} not within 1..{self.routed_experts}")

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a DeepSeek-V3 Hugging Face config dict (config.json's field names)."""
        if config.get("q_lora_rank") is None:
            raise ValueError("this model has no q_lora_rank: only DeepSeek-V3-style MLA (q compressed) is modelled")
        return cls(
            hidden_size=config["hidden_size"], num_layers=config["num_hidden_layers"],
            first_dense_layers=config["first_k_dense_replace"], num_heads=config["num_attention_heads"],
            q_lora_rank=config["q_lora_rank"], kv_lora_rank=config["kv_lora_rank"],
            qk_nope_head_dim=config["qk_nope_head_dim"], qk_rope_head_dim=config["qk_rope_head_dim"],
            v_head_dim=config["v_head_dim"], dense_intermediate=config["intermediate_size"],
            moe_intermediate=config["moe_intermediate_size"], routed_experts=config["n_routed_experts"],
            shared_experts=config["n_shared_experts"], experts_per_token=config["num_experts_per_tok"],
            vocab_size=config["vocab_size"],
        )

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers

    @property
    def kv_latent_dim(self) -> int:
        """Elements cached per token per layer: the compressed latent plus the shared rope key (512 + 64)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def kv_bytes_per_token(self, kv_dtype_bytes: int = BF16_BYTES, layers: int | None = None) -> int:
        """Bytes of compressed MLA cache one token occupies over `layers` (default: all)."""
        return self.kv_latent_dim * kv_dtype_bytes * (self.num_layers if layers is None else layers)

    def matrices(self, component: str) -> list[tuple[int, int]]:
        """(rows, cols) of each weight of one instance of `component` (one layer's, one expert's, ...)."""
        h, heads = self.hidden_size, self.num_heads
        if component == "attention":
            return [(self.q_lora_rank, h), (heads * (self.qk_nope_head_dim + self.qk_rope_head_dim), self.q_lora_rank),
                    (self.kv_latent_dim, h), (heads * (self.qk_nope_head_dim + self.v_head_dim), self.kv_lora_rank),
                    (h, heads * self.v_head_dim)]  # q_a, q_b, kv_a (with rope key), kv_b, o
        if component == "dense_mlp":
            return [(self.dense_intermediate, h)] * 2 + [(h, self.dense_intermediate)]  # gate, up, down
        if component in ("routed_experts", "shared_experts"):
            return [(self.moe_intermediate, h)] * 2 + [(h, self.moe_intermediate)]  # one expert
        if component == "router":
            return [(self.routed_experts, h)]
        if component in ("embedding", "head"):
            return [(self.vocab_size, h)]
        if component == "norms":  # per layer: input and post-attention norms, q_a and kv_a latent norms
            return [(1, 2 * h + self.q_lora_rank + self.kv_lora_rank)]
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")

    def instances(self, component: str) -> int:
        """How many copies of `component` the whole model holds."""
        return {"attention": self.num_layers, "dense_mlp": self.first_dense_layers, "router": self.moe_layers,
                "routed_experts": self.moe_layers * self.routed_experts,
                "shared_experts": self.moe_layers * self.shared_experts,
                "norms": self.num_layers, "embedding": 1, "head": 1}[component]


def matrix_bytes(rows: int, cols: int, weight_format: str) -> int:
    if weight_format == "bf16":
        return rows * cols * BF16_BYTES
    if weight_format == "fp8-block":
        scales = math.ceil(rows / FP8_BLOCK) * math.ceil(cols / FP8_BLOCK)
        return rows * cols * FP8_BYTES + scales * FP8_SCALE_BYTES
    raise ValueError(f"unknown weight format {weight_format!r}; expected one of {WEIGHT_FORMATS}")


# Which components the block-FP8 checkpoint stores in FP8; the rest stay bf16 in either format.
_FP8_COMPONENTS = ("attention", "dense_mlp", "routed_experts", "shared_experts")


def params(model: ModelShape, component: str) -> int:
    """Parameters of one instance of `component`."""
    return sum(r * c for r, c in model.matrices(component))


def instance_bytes(model: ModelShape, component: str, weight_format: str) -> int:
    """Weight bytes of one instance of `component` stored in `weight_format`."""
    fmt = weight_format if component in _FP8_COMPONENTS else "bf16"
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weight_format!r}; expected one of {WEIGHT_FORMATS}")
    return sum(matrix_bytes(r, c, fmt) for r, c in model.matrices(component))


def total_params(model: ModelShape) -> dict[str, int]:
    """Parameters of the whole model, per component."""
    return {c: params(model, c) * model.instances(c) for c in COMPONENTS}


def activated_params(model: ModelShape) -> dict[str, int]:
    """Parameters one token's forward pass reads, per component: all but the routed experts not chosen,
    and one row of the embedding table (a lookup, not a matmul).

    This gives 36.6B for V3, which the published "37B activated" rounds to; counting the whole embedding
    table instead gives 37.55B, which would round to 38B, so the published figure does not count it.
    """
    counts = total_params(model)
    counts["routed_experts"] = params(model, "routed_experts") * model.moe_layers * model.experts_per_token
    counts["embedding"] = model.hidden_size
    return counts


def weight_bytes(model: ModelShape, weight_format: str) -> dict[str, int]:
    """Weight bytes of the whole model, per component."""
    return {c: instance_bytes(model, c, weight_format) * model.instances(c) for c in COMPONENTS}


# DeepSeek-V3 / R1 (same architecture): the numbers of the `deepseek-v3-layers` preset with its 61 layers.
DEEPSEEK_V3 = ModelShape(
    hidden_size=7168, num_layers=61, first_dense_layers=3, num_heads=128, q_lora_rank=1536, kv_lora_rank=512,
    qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, dense_intermediate=18432, moe_intermediate=2048,
    routed_experts=256, shared_experts=1, experts_per_token=8, vocab_size=129280,
)
DEEPSEEK_V3_PUBLISHED_TOTAL_PARAMS = 671e9  # DeepSeek-V3 technical report (arXiv 2412.19437), abstract
DEEPSEEK_V3_PUBLISHED_ACTIVATED_PARAMS = 37e9  # same source: "37B activated for each token"
