"""The metric names by which a layer-profile record carries measured layer times: one spelling for writer and reader.

Contract: the layer study (`lab.studies.deepseek_v3_full`, notebook 10) writes and `layer_profile` reads:
- `component_s(weights, kind, phase, component, tokens, context)`
      `layer_{weights}_{kind}_{phase}_{component}_t{tokens}_ctx{context}_s`: mean seconds of one call of that
      component of one decoder layer ("dense" or "moe"; "head" for the LM head) for `tokens` tokens in the
      step (decode: sequences; prefill: prompt tokens) at `context` tokens of context each (decode) or one
      fresh prompt of `tokens` (prefill: context is the prompt, the mean causal context is half of it).
      `weights` is "bf16" or "fp8" (the engine's `quantization="fp8"`). A component that does not depend on
      context is written at one context only.
- `SHARD_TP`, `SHARD_EXPERTS_HELD`, `SHARD_EXPERT_TP`: the shard the layer ran at (one GPU: 1, all experts, 1);
- `EXPERTS_PER_TOKEN`: top-k of the measured model, so that routed-expert rows = tokens x k on one GPU.
Component names are those of `layer_time` ("attention", "dense_mlp", "router", "routed_experts",
"shared_experts", "head", "other").
"""
from __future__ import annotations

import re

SHARD_TP = "layer_shard_tp"
SHARD_EXPERTS_HELD = "layer_shard_experts_held"
SHARD_EXPERT_TP = "layer_shard_expert_tp"
EXPERTS_PER_TOKEN = "layer_experts_per_token"
WEIGHTS = ("bf16", "fp8")


def component_s(weights: str, kind: str, phase: str, component: str, tokens: int, context: int) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return f"layer_{weights}_{kind}_{phase}_{component}_t{tokens}_ctx{context}_s"


# groups: weights, kind, phase, component, tokens, context
COMPONENT_S = re.compile(r"^layer_(bf16|fp8)_(dense|moe|head)_(decode|prefill)_(\w+?)_t(\d+)_ctx(\d+)_s$")
