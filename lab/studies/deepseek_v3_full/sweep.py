"""The layer profile: each component of the dense and the MoE layer timed over batch x context (decode) and
prompt tokens (prefill), written under `lab.scale.cluster.layer_metrics` names.

Contract: `measure_layers(built, SweepConfig) -> dict[str, float]` (metrics for one weight format):
- decode, per batch B (one new token per sequence, `B` sequences of `context` tokens in a paged cache, a
  pure-decode step as the runner builds it): "attention" (MLA with its projections, absorbed, as the engine
  decodes) at every (B, context); "other" (both RMSNorms and residual adds), "dense_mlp", "router",
  "routed_experts", "shared_experts" and the LM "head" at B (they do not read the cache), written at the first
  context. Attention is timed on the dense layer's module and written for both kinds (the same shapes).
- prefill, per N prompt tokens (one fresh prompt, as the engine prefills with no cached context): the same
  components but the head, written at context N.
Routed experts run on the expert ids of `routing` (`routing.sample_expert_ids`), not on the dummy router's
choice; the `skewed` assumption is timed beside it under `skew_<weights>_<kind>_...` names (not read by the
cluster model) with the expert load it produced (`routing_<kind>_t<B>_{active_experts,busiest_expert_rows}`).
Also written: the shard (`layer_shard_*`: one GPU, every expert) and top-k.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lab.engine.attention.metadata import AttentionMetadata, build_step_tensors
from lab.scale.cluster import layer_metrics as names
from lab.studies.deepseek_v3_full.layer import BuiltLayers
from lab.studies.deepseek_v3_full.routing import RoutingAssumption, measured_load, sample_expert_ids
from lab.studies.deepseek_v3_full.timer import time_call


@dataclass(frozen=True)
class SweepConfig:
    batches: tuple[int, ...]  # decode sequences per step
    contexts: tuple[int, ...]  # decode context tokens per sequence
    prefill_tokens: tuple[int, ...]  # prompt tokens of one prefill
    routing: RoutingAssumption  # the routing the cluster model reads
    skewed: RoutingAssumption | None  # a second routing timed beside it (routed experts only)
    repeats: int = 20
    warmup: int = 3
    cuda_graphs: bool = True  # decode components as CUDA graph replays (the engine decodes in graphs)

    def __post_init__(self) -> None:
        for name in ("batches", "contexts", "prefill_tokens"):
            values = getattr(self, name)
            if not values or list(values) != sorted(set(values)) or values[0] < 1:
                raise ValueError(f"{name} must be strictly increasing positive integers, got {values}")


def _meta(built: BuiltLayers, query_lens: list[int], seq_lens: list[int], blocks_each: int,
          pure_decode: bool) -> AttentionMetadata:
    bs, device = built.block_size, built.device
    tables = [list(range(i * blocks_each, (i + 1) * blocks_each)) for i in range(len(seq_lens))]
    slots = [tables[i][p // bs] * bs + p % bs for i, (q, n) in enumerate(zip(query_lens, seq_lens))
             for p in range(n - q, n)]
    starts = np.concatenate([[0], np.cumsum(query_lens)]).tolist()
    meta = AttentionMetadata(starts, seq_lens, tables, torch.tensor(slots, device=device), bs,
                             backend=built.attention_backend, no_cached_context=not pure_decode,
                             pure_decode=pure_decode)
    if built.attention_backend != "reference":
        build_step_tensors(meta, device)
    return meta


class _Timer:
    def __init__(self, built: BuiltLayers, sweep: SweepConfig) -> None:
        self.built, self.sweep = built, sweep

    def __call__(self, fn, graph: bool) -> float:
        return time_call(fn, self.built.device, self.sweep.repeats, self.sweep.warmup,
                         graph and self.sweep.cuda_graphs).seconds


def _hidden(built: BuiltLayers, tokens: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tokens, built.config.hidden_size, generator=g).to(built.device, built.dtype)


def _expert_inputs(built: BuiltLayers, routing: RoutingAssumption, tokens: int, seed: int):
    cfg = built.config
    ids_np = sample_expert_ids(routing, tokens, cfg.n_routed_experts, cfg.num_experts_per_tok,
                               np.random.default_rng(seed))
    ids = torch.from_numpy(ids_np).to(built.device)
    weights = torch.full(ids.shape, 1.0 / cfg.num_experts_per_tok, dtype=torch.float32, device=built.device)
    return ids_np, ids, weights


def _mlp_components(built: BuiltLayers, timer: _Timer, x: torch.Tensor, graph: bool, routing: RoutingAssumption,
                    seed: int) -> dict[str, dict[str, float]]:
    dense, moe = built.dense, built.moe
    _, ids, w = _expert_inputs(built, routing, x.shape[0], seed)
    a = torch.zeros_like(x)
    other = lambda: (dense.post_attention_layernorm(x + a), dense.input_layernorm(x), x + a)  # noqa: E731
    common = {"other": timer(other, graph)}
    return {"dense": {**common, "dense_mlp": timer(lambda: dense.mlp(x), graph)},
            "moe": {**common, "router": timer(lambda: moe.mlp.gate(x), graph),
                    "routed_experts": timer(lambda: moe.mlp.experts(x, w, ids), graph),
                    "shared_experts": timer(lambda: moe.mlp.shared_experts(x), graph)}}


def measure_layers(built: BuiltLayers, sweep: SweepConfig) -> dict[str, float]:
    cfg, bs, wf = built.config, built.block_size, built.weights
    timer = _Timer(built, sweep)
    latent = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    blocks = max(max(sweep.batches) * math.ceil(max(sweep.contexts) / bs), math.ceil(max(sweep.prefill_tokens) / bs))
    cache = (torch.zeros(blocks, bs, latent, dtype=built.dtype, device=built.device),)
    attn = built.dense.self_attn
    out = {names.SHARD_TP: 1.0, names.SHARD_EXPERTS_HELD: float(cfg.n_routed_experts), names.SHARD_EXPERT_TP: 1.0,
           names.EXPERTS_PER_TOKEN: float(cfg.num_experts_per_tok)}
    c0 = sweep.contexts[0]
    for b in sweep.batches:
        x = _hidden(built, b, seed=b)
        for c in sweep.contexts:
            meta = _meta(built, [1] * b, [c] * b, math.ceil(c / bs), pure_decode=True)
            rot = built.rotary(torch.full((b,), c - 1, dtype=torch.long, device=built.device))
            seconds = timer(lambda: attn(x, rot, cache, meta), graph=True)
            for kind in ("dense", "moe"):
                out[names.component_s(wf, kind, "decode", "attention", b, c)] = seconds
        for kind, times in _mlp_components(built, timer, x, True, sweep.routing, seed=b).items():
            for comp, seconds in times.items():
                out[names.component_s(wf, kind, "decode", comp, b, c0)] = seconds
        out[names.component_s(wf, "head", "decode", "head", b, c0)] = timer(lambda: built.head(x), graph=True)
        for routing in (sweep.routing, sweep.skewed):
            if routing is None:
                continue
            ids_np, ids, w = _expert_inputs(built, routing, b, seed=b)
            load = measured_load(ids_np, cfg.n_routed_experts)
            out[f"routing_{routing.kind}_t{b}_active_experts"] = load.active_experts
            out[f"routing_{routing.kind}_t{b}_busiest_expert_rows"] = load.busiest_expert_rows
            if routing is sweep.skewed:
                out[f"skew_{wf}_{routing.kind}_moe_decode_routed_experts_t{b}_s"] = timer(
                    lambda: built.moe.mlp.experts(x, w, ids), graph=True)
    for n in sweep.prefill_tokens:
        x = _hidden(built, n, seed=n)
        meta = _meta(built, [n], [n], math.ceil(n / bs), pure_decode=False)
        rot = built.rotary(torch.arange(n, device=built.device))
        seconds = timer(lambda: attn(x, rot, cache, meta), graph=False)
        for kind, times in _mlp_components(built, timer, x, False, sweep.routing, seed=n).items():
            for comp, s in {"attention": seconds, **times}.items():
                out[names.component_s(wf, kind, "prefill", comp, n, n)] = s
    return out
