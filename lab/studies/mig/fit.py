"""Which models and context lengths fit a slice: weight and KV bytes from a preset's shapes, `mig_model.memory_fit`.

Contract: `footprint(preset, hf_overrides)` is a `lab.gpu.mig_model.ModelFootprint` in bf16: a Qwen2/Llama dense
model (R1-Distill) counted matrix by matrix here, a DeepSeek-V3-style MLA model by `lab.scale.cluster.model`.
`fit_rows(profiles, table, models, contexts, reserve_gib)` is one row per (profile, model): capacity, weights, KV
tokens left and, per context length, whether one sequence of it fits. Arithmetic only: no device is asked.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from lab.engine.presets import get_preset
from lab.gpu.mig_model import ModelFootprint, memory_fit, slice_share
from lab.gpu.mig_profiles import MigProfile, MigProfileTable

BF16_BYTES = 2


def _dense_params(c: Mapping) -> int:
    """Qwen2/Llama: embeddings, per layer q/k/v (+ Qwen2's biases), o, gate/up/down, two norms; final norm; head."""
    hidden, layers, inter, vocab = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    head_dim = c.get("head_dim") or hidden // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    attention = hidden * hidden * 2 + hidden * kv * 2 + (hidden + 2 * kv if c["model_type"] == "qwen2" else 0)
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    head = 0 if c.get("tie_word_embeddings") else vocab * hidden
    return vocab * hidden + layers * per_layer + hidden + head


def footprint(preset: str, hf_overrides: Mapping | None = None) -> ModelFootprint:
    config = {**get_preset(preset), **(hf_overrides or {})}
    if config["model_type"] in ("qwen2", "llama"):
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        kv_per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * BF16_BYTES
        return ModelFootprint(preset, _dense_params(config) * BF16_BYTES, kv_per_token)
    from lab.scale.cluster.model import ModelShape, weight_bytes

    shape = ModelShape.from_hf_config(config)
    return ModelFootprint(preset, sum(weight_bytes(shape, "bf16").values()), shape.kv_bytes_per_token())


def fit_rows(profiles: Sequence[MigProfile], table: MigProfileTable, models: Sequence[ModelFootprint],
             contexts: Sequence[int], reserve_gib: float) -> list[dict]:
    rows = []
    for profile in dict.fromkeys(profiles):  # each profile once, in layout order
        for model in models:
            fit = memory_fit(slice_share(profile, table), model, reserve_gib)
            rows.append({"profile": profile.name, "model": model.name, "capacity_gib": round(fit.capacity_gib, 2),
                         "weights_gib": round(fit.weights_gib, 3), "kv_tokens": fit.kv_tokens,
                         **{f"fits_{n}": fit.fits_context(n) for n in contexts}})
    return rows
