"""Decode step time, ITL, TTFT and tokens/s per GPU of a layout, from a layer-time source and the fabric.

Contract: `StepModel` binds a model, a card, a fabric, a layout and a `LayerTimeSource` with the
assumptions a prediction needs, all given: `expert_load_imbalance` (busiest GPU's expert rows over the
mean, >= 1: routing skew after any balancing), `overlap_communication` (True: a layer takes
max(compute, communication), as two-micro-batch overlap aims for; False: their sum, the plain path), the
activation bytes per element sent in dispatch and combine, and `node_dedup_phases`: the phases whose dispatch
and combine cross the NIC once per (token, destination node) rather than once per (token, expert) (DeepEP's
normal kernels, which DeepSeek and SGLang run for prefill; empty, the plain path, counts every copy).
- `decode_step(batch, context_tokens)`: `batch` sequences over the instance, split into `pp` micro-batches
  and each over `dp` groups; one round advances every sequence by a token: ITL = the round, tokens/s =
  batch / round;
- `prefill(prompt_tokens)`: one prompt alone on one DP group (TTFT without queueing), mean causal context
  half the prompt;
- `predict_workload(...)`: the above for a `Workload`, plus output tokens/s per GPU of a deployment.
Each `StageTime` keeps its compute per component and its communication per part ("tp_all_reduce",
"ep_dispatch", "ep_combine", "pp_hand_off"), summed over the stage's layers, and the layer-time source's
caveats (e.g. a point borrowed from the other phase's grid); `StepPrediction.caveats` gathers them.
Expected active experts assume uniform routing (each expert slot receives a token with probability
k / routed experts); the skew enters only through `expert_load_imbalance`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from lab.scale.cluster.comm import all_reduce_s, all_to_all_s, distinct_remote_nodes, point_to_point_s
from lab.scale.cluster.hardware import GPU, Fabric
from lab.scale.cluster.layer_time import PHASES, LayerTimeSource, LayerWork
from lab.scale.cluster.layout import Layout
from lab.scale.cluster.model import BF16_BYTES, ModelShape


@dataclass(frozen=True)
class StageTime:
    compute_s: dict[str, float]  # per component, summed over the stage's layers
    communication_s: float
    total_s: float
    communication_parts_s: dict[str, float] = field(default_factory=dict)  # per part, summed over the layers
    caveats: tuple[str, ...] = ()  # what the layer times rest on besides their own measurement


@dataclass(frozen=True)
class StepPrediction:
    stages: tuple[StageTime, ...]
    itl_s: float  # time between two tokens of one sequence
    tokens_per_s: float  # whole instance
    tokens_per_s_per_gpu: float

    @property
    def caveats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for stage in self.stages for c in stage.caveats))


@dataclass(frozen=True)
class StepModel:
    model: ModelShape
    gpu: GPU
    fabric: Fabric
    layout: Layout
    layer_time: LayerTimeSource
    expert_load_imbalance: float
    overlap_communication: bool
    dispatch_bytes_per_element: float
    combine_bytes_per_element: float
    node_dedup_phases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.layout.validate(self.model)
        if not set(self.node_dedup_phases) <= set(PHASES):
            raise ValueError(f"node_dedup_phases must be among {PHASES}, got {self.node_dedup_phases}")
        if self.expert_load_imbalance < 1:
            raise ValueError(f"expert_load_imbalance is the busiest GPU's load over the mean, so >= 1; got "
                             f"{self.expert_load_imbalance}")

    def _work(self, kind: str, phase: str, group_tokens: int, stage_tokens: int, context: float) -> LayerWork:
        m, lay = self.model, self.layout
        held = lay.experts_per_gpu(m)
        rows = stage_tokens * m.experts_per_token / lay.ep * self.expert_load_imbalance
        p_hit = 1 - (1 - m.experts_per_token / m.routed_experts) ** stage_tokens
        return LayerWork(kind, phase, group_tokens, context, lay.tp, held, lay.expert_tp, rows, held * p_hit)

    def _stage(self, dense: int, moe: int, last: bool, phase: str, group_tokens: int, stage_tokens: int,
               context: float, head_tokens: int) -> StageTime:
        m, lay = self.model, self.layout
        activation = group_tokens * m.hidden_size * BF16_BYTES
        tp_comm = 2 * all_reduce_s(activation, lay.tp, self.gpu, self.fabric)  # after attention, after the MLP
        sending = group_tokens / lay.tp  # TP ranks hold the same tokens: each sends its share
        destinations = m.experts_per_token * lay.expert_tp
        copies = sending * destinations * m.hidden_size
        per_node = (sending * m.hidden_size * distinct_remote_nodes(destinations, lay.stage_gpus,
                                                                    self.fabric.gpus_per_node)
                    if phase in self.node_dedup_phases else None)
        dispatch, combine = (all_to_all_s(copies * b, lay.stage_gpus, self.gpu, self.fabric,
                                          None if per_node is None else per_node * b)
                             for b in (self.dispatch_bytes_per_element, self.combine_bytes_per_element))
        compute: dict[str, float] = {}
        parts = {"tp_all_reduce": 0.0, "ep_dispatch": 0.0, "ep_combine": 0.0, "pp_hand_off": 0.0}
        caveats: list[str] = []
        total = comm = 0.0
        for kind, count in (("dense", dense), ("moe", moe)):
            if count == 0:
                continue
            work = self._work(kind, phase, group_tokens, stage_tokens, context)
            times = self.layer_time.component_times_s(work)
            caveats += self.layer_time.caveats(work)
            for name, s in times.items():
                compute[name] = compute.get(name, 0.0) + count * s
            layer_parts = {"tp_all_reduce": tp_comm} | ({"ep_dispatch": dispatch, "ep_combine": combine}
                                                         if kind == "moe" else {})
            for name, s in layer_parts.items():
                parts[name] += count * s
            layer_compute, layer_comm = sum(times.values()), sum(layer_parts.values())
            overlapped = max(layer_compute, layer_comm)
            total += count * (overlapped if self.overlap_communication else layer_compute + layer_comm)
            comm += count * layer_comm
        if last:
            work = self._work("head", phase, head_tokens, stage_tokens, context)
            head = self.layer_time.component_times_s(work)
            caveats += self.layer_time.caveats(work)
            compute.update(head)
            total += sum(head.values())
        if lay.pp > 1 and not last:
            hand_off = point_to_point_s(activation, self.gpu, self.fabric,
                                        across_nodes=lay.stage_gpus >= self.fabric.gpus_per_node)
            parts["pp_hand_off"] = hand_off
            comm += hand_off
            total += hand_off
        return StageTime(compute, comm, total, parts, tuple(dict.fromkeys(caveats)))

    def _stages(self, phase: str, group_tokens: int, stage_tokens: int, context: float, head_tokens: int):
        layers = self.layout.stage_layers(self.model)
        return tuple(self._stage(d, e, s == len(layers) - 1, phase, group_tokens, stage_tokens, context, head_tokens)
                     for s, (d, e) in enumerate(layers))

    def decode_step(self, batch: int, context_tokens: float) -> StepPrediction:
        lay = self.layout
        if batch < lay.dp * lay.pp:
            raise ValueError(f"batch {batch} leaves DP groups or pipeline micro-batches idle: need >= dp*pp="
                             f"{lay.dp * lay.pp}")
        micro = batch / lay.pp
        group_tokens = math.ceil(micro / lay.dp)
        stages = self._stages("decode", group_tokens, group_tokens * lay.dp, context_tokens, group_tokens)
        # pp micro-batches in flight: a round lasts as long as one traversal, or pp turns of the slowest stage
        round_s = max(sum(s.total_s for s in stages), lay.pp * max(s.total_s for s in stages))
        return StepPrediction(stages, round_s, batch / round_s, batch / round_s / lay.gpus)

    def prefill(self, prompt_tokens: int) -> StepPrediction:
        """One prompt alone: its DP group runs attention, every GPU of the stage its experts."""
        if prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be >= 1, got {prompt_tokens}")
        stages = self._stages("prefill", prompt_tokens, prompt_tokens, prompt_tokens / 2, 1)
        ttft = sum(s.total_s for s in stages)
        return StepPrediction(stages, ttft, prompt_tokens / ttft, prompt_tokens / ttft / self.layout.gpus)

    def prefill_throughput(self, tokens_per_group: int, context_tokens: float) -> StepPrediction:
        """Every DP group (and pipeline stage) busy with `tokens_per_group` prompt tokens of mean context."""
        lay = self.layout
        stages = self._stages("prefill", tokens_per_group, tokens_per_group * lay.dp, context_tokens, 1)
        round_s = max(sum(s.total_s for s in stages), lay.pp * max(s.total_s for s in stages))
        tokens = tokens_per_group * lay.dp * lay.pp
        return StepPrediction(stages, round_s, tokens / round_s, tokens / round_s / lay.gpus)


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int
    output_tokens: int
    decode_batch: int  # running sequences per decode instance

    @property
    def mean_decode_context(self) -> float:
        return self.prompt_tokens + self.output_tokens / 2  # the context grows while it decodes


@dataclass(frozen=True)
class WorkloadPrediction:
    ttft_s: float
    itl_s: float
    decode_tokens_per_s_per_gpu: float
    prefill_tokens_per_s_per_gpu: float
    output_tokens_per_s_per_gpu: float  # of the whole deployment, the slower side deciding


def predict_workload(prefill: StepModel, prefill_instances: int, decode: StepModel, decode_instances: int,
                     workload: Workload, prefill_tokens_per_group: int) -> WorkloadPrediction:
    """A disaggregated deployment (or, passing the same colocated model twice, a split of one fleet's roles)."""
    ttft = prefill.prefill(workload.prompt_tokens).itl_s
    step = decode.decode_step(workload.decode_batch, workload.mean_decode_context)
    fill = prefill.prefill_throughput(prefill_tokens_per_group, workload.prompt_tokens / 2)
    decode_out = step.tokens_per_s * decode_instances
    prefill_out = fill.tokens_per_s * prefill_instances * workload.output_tokens / workload.prompt_tokens
    gpus = prefill.layout.gpus * prefill_instances + decode.layout.gpus * decode_instances
    return WorkloadPrediction(ttft, step.itl_s, step.tokens_per_s_per_gpu, fill.tokens_per_s_per_gpu,
                              min(decode_out, prefill_out) / gpus)
