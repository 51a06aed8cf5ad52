"""Tiny transformers checkpoints for tests: built with a fixed seed, saved with `save_pretrained`.

    path = make_tiny_checkpoint("deepseek_v3", tmp_path / "ckpt")          # -> Path (config.json + safetensors)
    ref = load_reference(path)                                             # transformers model, eval, float32
    logits = reference_logits(ref, [1, 2, 3])                              # (3, vocab) float32

Kinds (KINDS): "qwen2" (q/k/v bias, untied head), "llama" (tied head, GQA 4:1, llama3 rope),
"deepseek_v3" (grouped sigmoid routing with a random correction bias, first_k_dense_replace=1),
"deepseek_v3_yarn" (YaRN with mscale != mscale_all_dim, half-split rope layout),
"deepseek_v3_no_q_lora" (plain q_proj), "deepseek_v2" (V2-Lite style: softmax greedy routing, 2
shared experts, no q_lora, YaRN), "deepseek_v2_group" (softmax group_limited_greedy, q_lora).
Weights are redrawn at a scale that keeps activations O(1) (fan_in**-0.5, norms around 1, nonzero
biases), so a wrong layout or a dropped tensor shows up in the logits. Everything is float32.
`overrides` patch the transformers config kwargs, e.g. num_hidden_layers=3.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 512

_DEEPSEEK_BASE: dict[str, Any] = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=24, qk_nope_head_dim=16,
    qk_rope_head_dim=8, v_head_dim=12, first_k_dense_replace=1, max_position_embeddings=256, rms_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=1,
)
_V3 = dict(_DEEPSEEK_BASE, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
           routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True)
_V2 = dict(_DEEPSEEK_BASE, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, routed_scaling_factor=1.5,
           norm_topk_prob=False, topk_method="greedy", q_lora_rank=None)
_YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64, beta_fast=32.0,
             beta_slow=1.0)

KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("Qwen2ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), bos_token_id=0, eos_token_id=1)),
    "llama": ("LlamaForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64),
        bos_token_id=0, eos_token_id=[1, 2])),
    "deepseek_v3": ("DeepseekV3ForCausalLM", dict(_V3, rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "deepseek_v3_yarn": ("DeepseekV3ForCausalLM", dict(
        _V3, rope_interleave=False, rope_parameters=dict(_YARN, mscale=1.0, mscale_all_dim=0.8))),
    "deepseek_v3_no_q_lora": ("DeepseekV3ForCausalLM", dict(
        _V3, q_lora_rank=None, rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "deepseek_v2": ("DeepseekV2ForCausalLM", dict(_V2, rope_parameters=dict(_YARN, mscale=0.707, mscale_all_dim=0.707))),
    "deepseek_v2_group": ("DeepseekV2ForCausalLM", dict(
        _V2, q_lora_rank=32, topk_method="group_limited_greedy", n_group=4, topk_group=2,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
}


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # per-save/load progress bars flood test output


def _model_class(arch: str):
    import transformers

    return getattr(transformers, arch), getattr(transformers, arch.replace("ForCausalLM", "Config"))


@torch.no_grad()
def _redraw(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    tensors = dict(model.named_parameters())
    tensors.update((n, b) for n, b in model.named_buffers() if "correction_bias" in n)
    for name in sorted(tensors):
        t = tensors[name]
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
        if "norm" in name:
            t.copy_(1.0 + 0.2 * noise)
        elif t.ndim >= 2:
            t.copy_(noise * t.shape[-1] ** -0.5)  # last dim is fan-in for linears and stacked experts
        else:  # biases, the router correction bias
            t.copy_(0.1 * noise)


def make_tiny_checkpoint(kind: str, path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a tiny `kind` model with fixed-seed weights and save it (safetensors) under `path`."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    arch, kwargs = KINDS[kind]
    model_cls, config_cls = _model_class(arch)
    config = config_cls(**{**kwargs, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    _redraw(model, seed)
    path = Path(path)
    _quiet()
    model.save_pretrained(path, safe_serialization=True)
    return path


def load_reference(path: str | Path) -> torch.nn.Module:
    """The transformers model saved at `path`, float32, eager attention, eval mode."""
    from transformers import AutoModelForCausalLM

    _quiet()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def reference_logits(model: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """Full-sequence logits (len, vocab) float32 of one sequence, no cache."""
    ids = torch.tensor([token_ids], dtype=torch.long)
    return model(input_ids=ids, use_cache=False).logits[0].float()
