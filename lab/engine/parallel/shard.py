"""Tensor parallelism as a transform (gpt-fast's `tp.py` idea): the model files stay vanilla, and
`shard_model_(model, tp)` rewrites a freshly built model, on the meta device, into rank `tp.rank`'s shard.

Contract: after `shard_model_`, the model's parameters have their local shapes (the loader materializes and
fills them as usual), its attention modules know their local head counts, and `model.shard_plan` (a
`ShardPlan`) says which part of each full checkpoint tensor this rank loads: `plan.stream(weights)` narrows
each (HF name, full tensor) of a checkpoint, or of the dummy weights drawn full-size (`loader.dummy_checkpoint`),
to this rank's slice and drops what the rank does not hold (other ranks' experts, a row-parallel bias off
rank 0). The module's own `weight_targets` then place the slice, as for an unsharded model.
What is split is stated once in `parallel/plan.py`; the layers that talk to other ranks in `parallel/layers.py`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from lab.engine.models.layers import GatedMLP, Linear
from lab.engine.models.llama import LlamaAttention
from lab.engine.models.mla import MLAttention
from lab.engine.models.moe import DeepseekMoE
from lab.engine.parallel.layers import (
    ParallelLMHead, ParallelMoE, RowParallelLinear, ShardedExperts, VocabParallelEmbedding,
)
from lab.engine.parallel.plan import Range, check_tensor_parallel, even_range, kv_head_range
from lab.engine.parallel.state import TensorParallel


@dataclass(frozen=True)
class Slice:
    dim: int
    range: Range


DROP = None  # a checkpoint tensor this rank does not hold


class ShardPlan:
    """HF tensor name -> the `Slice` of it this rank loads, or DROP; names not listed load whole (replicated)."""

    def __init__(self) -> None:
        self.rules: dict[str, Slice | None] = {}

    def split(self, name: str, dim: int, rows: Range) -> None:
        self.rules[name] = Slice(dim, rows)

    def drop(self, name: str) -> None:
        self.rules[name] = DROP

    def stream(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        rules = self.rules
        for name, tensor in weights:
            if name not in rules:
                yield name, tensor
                continue
            rule = rules[name]
            if rule is not DROP:
                yield name, tensor.narrow(rule.dim, rule.range.start, rule.range.size)


def shard_model_(model: torch.nn.Module, tp: TensorParallel) -> None:
    """Rewrite `model` (a CausalLM built on the meta device) into rank tp.rank's shard; sets `model.shard_plan`."""
    config = model.config
    check_tensor_parallel(config, tp.size)
    plan = ShardPlan()
    stack, hidden = model.model, config.hidden_size
    vocab = even_range(config.vocab_size, tp.rank, tp.size)
    stack.embed_tokens = VocabParallelEmbedding(vocab, hidden, tp)
    plan.split("model.embed_tokens.weight", 0, vocab)
    model.lm_head = ParallelLMHead(hidden, vocab, stack.embed_tokens if config.tie_word_embeddings else None, tp)
    if not config.tie_word_embeddings:
        plan.split("lm_head.weight", 0, vocab)
    for i, layer in enumerate(stack.layers):
        prefix = f"model.layers.{i}"
        attn = layer.self_attn
        if isinstance(attn, LlamaAttention):
            _shard_gqa(attn, f"{prefix}.self_attn", tp, plan)
        elif isinstance(attn, MLAttention):
            _shard_mla(attn, f"{prefix}.self_attn", tp, plan)
        else:
            raise ValueError(f"tensor parallelism does not know how to split {type(attn).__name__}")
        if isinstance(layer.mlp, DeepseekMoE):
            layer.mlp = _shard_moe(layer.mlp, f"{prefix}.mlp", tp, plan)
        elif isinstance(layer.mlp, GatedMLP):
            _shard_mlp(layer.mlp, f"{prefix}.mlp", tp, plan, reduce=True)
        else:
            raise ValueError(f"tensor parallelism does not know how to split {type(layer.mlp).__name__}")
    model.shard_plan = plan


def _column(linear: Linear, rows: int) -> Linear:
    """A column-parallel replacement: the same input, `rows` of the output rows."""
    return Linear(linear.weight.shape[1], rows, bias=linear.bias is not None)


def _row(linear: Linear, columns: int, tp: TensorParallel, reduce: bool = True) -> RowParallelLinear:
    """A row-parallel replacement: `columns` of the input, the whole output, summed over ranks."""
    return RowParallelLinear(columns, linear.weight.shape[0], linear.bias is not None, tp, reduce)


def _split_row_parallel(name: str, linear: Linear, columns: Range, tp: TensorParallel, plan: ShardPlan) -> None:
    plan.split(f"{name}.weight", 1, columns)
    if linear.bias is not None and not tp.is_leader:  # added once, by rank 0
        plan.drop(f"{name}.bias")


def _kinds(linear: Linear) -> tuple[str, ...]:
    return ("weight", "bias") if linear.bias is not None else ("weight",)


def _shard_gqa(attn: LlamaAttention, prefix: str, tp: TensorParallel, plan: ShardPlan) -> None:
    d = attn.head_dim
    heads = even_range(attn.num_heads, tp.rank, tp.size)
    kv = kv_head_range(attn.num_kv_heads, tp.rank, tp.size)
    for kind in _kinds(attn.qkv_proj):
        plan.split(f"{prefix}.q_proj.{kind}", 0, Range(heads.start * d, heads.stop * d))
        for name in ("k_proj", "v_proj"):
            plan.split(f"{prefix}.{name}.{kind}", 0, Range(kv.start * d, kv.stop * d))
    _split_row_parallel(f"{prefix}.o_proj", attn.o_proj, Range(heads.start * d, heads.stop * d), tp, plan)
    attn.num_heads, attn.num_kv_heads = heads.size, kv.size
    attn.q_size, attn.kv_size = heads.size * d, kv.size * d
    attn.qkv_proj = _column(attn.qkv_proj, attn.q_size + 2 * attn.kv_size)
    attn.o_proj = _row(attn.o_proj, attn.q_size, tp)


def _shard_mla(attn: MLAttention, prefix: str, tp: TensorParallel, plan: ShardPlan) -> None:
    """Heads split; q_a / kv_a (the latents) and their norms replicated: every rank needs the whole latent."""
    heads = even_range(attn.num_heads, tp.rank, tp.size)
    qk, kv_b, v = attn.qk_head_dim, attn.qk_nope_head_dim + attn.v_head_dim, attn.v_head_dim
    q_name = "q_b_proj" if attn.has_q_lora else "q_proj"
    plan.split(f"{prefix}.{q_name}.weight", 0, Range(heads.start * qk, heads.stop * qk))
    plan.split(f"{prefix}.kv_b_proj.weight", 0, Range(heads.start * kv_b, heads.stop * kv_b))
    _split_row_parallel(f"{prefix}.o_proj", attn.o_proj, Range(heads.start * v, heads.stop * v), tp, plan)
    attn.num_heads = heads.size
    setattr(attn, q_name, _column(getattr(attn, q_name), heads.size * qk))
    attn.kv_b_proj = _column(attn.kv_b_proj, heads.size * kv_b)
    attn.o_proj = _row(attn.o_proj, heads.size * v, tp)


def _shard_mlp(mlp: GatedMLP, prefix: str, tp: TensorParallel, plan: ShardPlan, reduce: bool) -> None:
    rows = even_range(mlp.intermediate_size, tp.rank, tp.size)
    for kind in _kinds(mlp.gate_up_proj):
        plan.split(f"{prefix}.gate_proj.{kind}", 0, rows)
        plan.split(f"{prefix}.up_proj.{kind}", 0, rows)
    _split_row_parallel(f"{prefix}.down_proj", mlp.down_proj, rows, tp, plan)
    mlp.intermediate_size = rows.size
    mlp.gate_up_proj = _column(mlp.gate_up_proj, 2 * rows.size)
    mlp.down_proj = _row(mlp.down_proj, rows.size, tp, reduce)


def _shard_moe(moe: DeepseekMoE, prefix: str, tp: TensorParallel, plan: ShardPlan) -> ParallelMoE:
    full = moe.experts
    owned = even_range(full.num_experts, tp.rank, tp.size)
    for e in range(full.num_experts):
        if not owned.start <= e < owned.stop:
            for name in ("gate_proj", "up_proj", "down_proj"):
                plan.drop(f"{prefix}.experts.{e}.{name}.weight")
    experts = ShardedExperts(owned, full.w13.shape[2], full.intermediate_size)
    shared = moe.shared_experts
    if shared is not None:  # tensor-parallel like a dense MLP; its partial sum joins the experts' before the reduce
        _shard_mlp(shared, f"{prefix}.shared_experts", tp, plan, reduce=False)
    return ParallelMoE(moe.gate, experts, shared, tp)
