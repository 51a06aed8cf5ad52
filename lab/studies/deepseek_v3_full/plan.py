"""Planning full-size DeepSeek-V3 with the cluster model: which layouts fit a cluster, what they give, and the
published anchors against the prediction. Torch-free.

Contract: every number here comes from `lab.scale.cluster` plus the `Assumptions` the notebook states (collective
latency, memory reserve, efficiencies of the roofline source, expert load imbalance, overlap, dispatch/combine
bytes): nothing is tuned to an anchor.
- `layer_source(gpu, a, profile=None)`: the layer times for a card: the roofline at the stated efficiencies, or, with
  a `MeasuredProfile` (a GPU layer record), its measurements carried to the card and shard
  (`layer_profile.TransferredLayerTime`). Weights are V3's block-FP8 checkpoint on every card; a card without FP8
  tensor cores (A100) runs them as bf16 GEMMs (W8A16).
- `plan_cluster(cluster, workload, a, profile)`: one colocated instance over the whole cluster per candidate
  layout (tp in 1/2/4/8, pp 1 or 2, dp the rest, ep over the stage or over dp); the largest decode batch that fits
  at the workload's full context, capped at `a.max_batch_per_gpu` per GPU; decode ITL, TTFT of one prompt, output
  tokens/s per GPU and GPU-hours per million output tokens (times `price_per_gpu_hour` when given); a row's note
  carries the layer-time source's caveats (e.g. a point taken from the other phase's grid), or why it has no
  prediction.
- `anchor_rows(settings, a, profile)`: each published anchor (`cluster.anchors.ANCHORS`) predicted with the layout
  and workload of its `AnchorSetting` and compared (`anchors.compare`): the signed error in %, met when within 25 %.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from lab.scale.cluster.anchors import ANCHORS, compare
from lab.scale.cluster.hardware import IB_HDR_200_BYTES_PER_S, IB_NDR_400_BYTES_PER_S, GPU, Fabric, gpu
from lab.scale.cluster.layer_profile import TransferredLayerTime
from lab.scale.cluster.layer_time import LayerTimeSource, MeasuredLayerTime, RooflineLayerTime
from lab.scale.cluster.layout import Layout
from lab.scale.cluster.memory import max_batch, memory_per_gpu
from lab.scale.cluster.model import DEEPSEEK_V3 as V3
from lab.scale.cluster.predict import StepModel, StepPrediction

WEIGHTS = "fp8-block"  # the published V3/R1 checkpoint


@dataclass(frozen=True)
class Cluster:
    name: str
    gpu: str  # a `hardware.CATALOG` name
    nodes: int
    gpus_per_node: int
    nic_bytes_per_s: float  # per GPU between nodes

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


CLUSTERS = (Cluster("16xA100-80G", "A100-80G", 2, 8, IB_HDR_200_BYTES_PER_S),  # the article's cluster
            Cluster("8xH200", "H200", 1, 8, IB_NDR_400_BYTES_PER_S),
            Cluster("2x8xH100", "H100-SXM", 2, 8, IB_NDR_400_BYTES_PER_S))


@dataclass(frozen=True)
class Assumptions:
    collective_latency_s: float  # per collective; measure with notebook 08
    reserve_bytes: float  # per GPU: activations, graphs, runtime
    bandwidth_efficiency: float  # roofline source only (a measured profile carries its own)
    compute_efficiency: float
    expert_load_imbalance: float = 1.0  # busiest GPU's expert rows over the mean (1: the uniform routing)
    overlap_communication: bool = True
    dispatch_bytes_per_element: float = 1.0  # FP8 dispatch (DeepSeek-V3 report)
    combine_bytes_per_element: float = 2.0  # bf16 combine
    # prefill dispatch/combine cross the NIC once per (token, node), forwarded over NVLink there (DeepEP's normal
    # kernels, which both anchors' systems run for prefill); False, the plain path: once per (token, expert)
    node_dedup_prefill: bool = False
    kv_dtype_bytes: int = 2
    max_batch_per_gpu: int = 256
    price_per_gpu_hour: float | None = None  # the user's price; None: GPU-hours only


@dataclass(frozen=True)
class MeasuredProfile:
    layer_time: MeasuredLayerTime
    gpu: str  # the card the record ran on (catalog name)
    weights: str  # "bf16" or "fp8" (the engine's)


def _roofline(card: GPU, a: Assumptions, weights: str = WEIGHTS) -> RooflineLayerTime:
    gemm = "bf16" if card.fp8_flops is None and weights == "fp8-block" else None
    return RooflineLayerTime(V3, card, weights, a.kv_dtype_bytes, a.bandwidth_efficiency, a.compute_efficiency,
                             gemm_format=gemm)


def layer_source(card: GPU, a: Assumptions, profile: MeasuredProfile | None = None) -> LayerTimeSource:
    target = _roofline(card, a)
    if profile is None:
        return target
    # the engine's fp8 keeps routed experts in bf16: the measured card's roofline is built in what it stored
    measured_format = "fp8-block" if profile.weights == "fp8" else "bf16"
    return TransferredLayerTime(profile.layer_time, _roofline(gpu(profile.gpu), a, measured_format), target)


def _fabric(gpus_per_node: int, nic: float, a: Assumptions) -> Fabric:
    return Fabric(gpus_per_node, nic, a.collective_latency_s)


def _step_model(card: GPU, fabric: Fabric, layout: Layout, a: Assumptions, profile) -> StepModel:
    return StepModel(V3, card, fabric, layout, layer_source(card, a, profile), a.expert_load_imbalance,
                     a.overlap_communication, a.dispatch_bytes_per_element, a.combine_bytes_per_element,
                     ("prefill",) if a.node_dedup_prefill else ())


def candidate_layouts(gpus: int) -> list[Layout]:
    out = []
    for pp in (1, 2):
        stage = gpus // pp
        for tp in (1, 2, 4, 8):
            if stage % tp or stage < tp:
                continue
            for ep in sorted({stage, stage // tp}):
                layout = Layout(tp=tp, dp=stage // tp, ep=ep, pp=pp)
                if not layout.problems(V3):
                    out.append(layout)
    return out


@dataclass(frozen=True)
class PlanRow:
    cluster: str
    layout: str
    weight_gb_per_gpu: float
    batch: int  # running sequences (0: the weights do not fit)
    itl_ms: float | None
    ttft_ms: float | None
    output_tokens_per_s_per_gpu: float | None
    gpu_hours_per_million_tokens: float | None
    cost_per_million_tokens: float | None
    note: str


def _describe(layout: Layout) -> str:
    return f"tp{layout.tp} dp{layout.dp} ep{layout.ep} pp{layout.pp}"


def plan_cluster(cluster: Cluster, prompt_tokens: int, output_tokens: int, a: Assumptions,
                 profile: MeasuredProfile | None = None) -> list[PlanRow]:
    card = gpu(cluster.gpu)
    fabric = _fabric(cluster.gpus_per_node, cluster.nic_bytes_per_s, a)
    context = prompt_tokens + output_tokens
    rows = []
    for layout in candidate_layouts(cluster.gpus):
        args = (WEIGHTS, a.kv_dtype_bytes, a.reserve_bytes)
        weights_gb = memory_per_gpu(V3, layout, card, 0, context, *args).weight_bytes / 1e9
        fits = max_batch(V3, layout, card, context, *args)
        unit = layout.dp * layout.pp
        batch = min(fits, a.max_batch_per_gpu * layout.gpus) // unit * unit
        if batch < unit:
            rows.append(PlanRow(cluster.name, _describe(layout), weights_gb, 0, None, None, None, None, None,
                                f"does not fit: at most {fits} sequences of {context} tokens"))
            continue
        try:
            model = _step_model(card, fabric, layout, a, profile)
            step = model.decode_step(batch, prompt_tokens + output_tokens / 2)
            ttft = model.prefill(prompt_tokens).itl_s
        except ValueError as e:  # e.g. outside the measured range: say so, never extrapolate
            rows.append(PlanRow(cluster.name, _describe(layout), weights_gb, batch, None, None, None, None, None,
                                str(e)))
            continue
        per_gpu = step.tokens_per_s_per_gpu
        hours = 1e6 / per_gpu / 3600
        note = "; ".join(dict.fromkeys(step.caveats + model.prefill(prompt_tokens).caveats))
        rows.append(PlanRow(cluster.name, _describe(layout), weights_gb, batch, 1e3 * step.itl_s, 1e3 * ttft, per_gpu,
                            hours, hours * a.price_per_gpu_hour if a.price_per_gpu_hour is not None else None, note))
    return sorted(rows, key=lambda r: -(r.output_tokens_per_s_per_gpu or 0))


@dataclass(frozen=True)
class AnchorSetting:
    anchor: str
    layout: Layout
    context_tokens: int  # decode: mean context of a step; prefill: tokens per prompt
    tokens_per_gpu: int  # decode: running sequences per GPU (upper bound); prefill: prompt tokens per DP group
    max_itl_s: float | None = None  # decode: the latency the source states, bounding the batch
    computed_fraction: float = 1.0  # prefill: share of input tokens computed (the rest hit a prefix cache)


@dataclass(frozen=True)
class AnchorRow:
    anchor: str
    phase: str
    published_per_node: float
    predicted_per_node: float
    error_pct: float
    met: bool  # within 25 %
    setting: str
    caveats: tuple[str, ...] = ()  # what the prediction rests on besides the measurement (borrowed points, ...)
    tokens_per_gpu: int = 0  # decode: the batch per GPU chosen; prefill: prompt tokens per DP group


def _decode_per_gpu(model: StepModel, s: AnchorSetting) -> tuple[StepPrediction, int]:
    lay = model.layout
    best, best_batch = None, 0
    for per_gpu in range(1, s.tokens_per_gpu + 1):
        step = model.decode_step(per_gpu * lay.gpus, s.context_tokens)
        if s.max_itl_s is not None and step.itl_s > s.max_itl_s:
            break
        best, best_batch = step, per_gpu
    if best is None:
        raise ValueError(f"{s.anchor}: even one sequence per GPU misses the stated ITL of {s.max_itl_s} s")
    return best, best_batch


def anchor_step(s: AnchorSetting, a: Assumptions, profile: MeasuredProfile | None = None,
                roofline_bound: bool = False) -> tuple[StepPrediction, int]:
    """The step an anchor is predicted from and its tokens per GPU (decode: the batch chosen under the ITL bound;
    prefill: one round at `tokens_per_gpu` per DP group). `roofline_bound`: the same work on the roofline at
    efficiency 1 (the physical bound) instead of the layer source."""
    anchor = next((x for x in ANCHORS if x.name == s.anchor), None)
    if anchor is None:
        raise ValueError(f"no anchor {s.anchor!r}; known: {[x.name for x in ANCHORS]}")
    if roofline_bound:
        a, profile = replace(a, bandwidth_efficiency=1.0, compute_efficiency=1.0), None
    card = gpu(anchor.gpu)
    model = _step_model(card, _fabric(anchor.gpus_per_node, IB_NDR_400_BYTES_PER_S, a), s.layout, a, profile)
    if anchor.phase == "decode":
        return _decode_per_gpu(model, s)
    return model.prefill_throughput(s.tokens_per_gpu, s.context_tokens / 2), s.tokens_per_gpu


def anchor_rows(settings: list[AnchorSetting], a: Assumptions, profile: MeasuredProfile | None = None,
                target_pct: float = 25.0) -> list[AnchorRow]:
    rows = []
    for s in settings:
        anchor = next((x for x in ANCHORS if x.name == s.anchor), None)
        if anchor is None:
            raise ValueError(f"no anchor {s.anchor!r}; known: {[x.name for x in ANCHORS]}")
        step, chosen = anchor_step(s, a, profile)
        if anchor.phase == "decode":
            per_gpu = step.tokens_per_s_per_gpu
            how = f"{_describe(s.layout)}, {chosen} seqs/GPU at {s.context_tokens} context"
        else:
            per_gpu = step.tokens_per_s_per_gpu / s.computed_fraction
            how = (f"{_describe(s.layout)}, {s.tokens_per_gpu} tokens per DP group of {s.context_tokens}-token "
                   f"prompts, {s.computed_fraction:.1%} of input computed")
        c = compare(anchor, per_gpu)
        rows.append(AnchorRow(anchor.name, anchor.phase, anchor.tokens_per_s_per_node,
                              c.predicted_tokens_per_s_per_node, c.error_pct, abs(c.error_pct) <= target_pct, how,
                              step.caveats, chosen))
    return rows


def anchor_settings(table: dict[str, dict]) -> list[AnchorSetting]:
    """The notebook's ANCHOR_SETTINGS (anchor -> tp, dp, ep, redundant_experts, context_tokens, tokens_per_gpu,
    max_itl_s, computed_fraction) as settings; the layout's role follows the anchor's phase."""
    out = []
    for name, s in table.items():
        phase = next((x.phase for x in ANCHORS if x.name == name), None)
        if phase is None:
            raise ValueError(f"no anchor {name!r}; known: {[x.name for x in ANCHORS]}")
        layout = Layout(tp=s.get("tp", 1), dp=s["dp"], ep=s["ep"], redundant_experts=s.get("redundant_experts", 0),
                        role=phase)
        out.append(AnchorSetting(name, layout, s["context_tokens"], s["tokens_per_gpu"], s.get("max_itl_s"),
                                 s.get("computed_fraction", 1.0)))
    return out


def _key(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def plan_metrics(rows: list[PlanRow]) -> dict[str, float]:
    out = {}
    for cluster in sorted({r.cluster for r in rows}):
        mine = [r for r in rows if r.cluster == cluster and r.output_tokens_per_s_per_gpu is not None]
        k = _key(cluster)
        out[f"plan_{k}_layouts_fitting"] = float(len(mine))
        if mine:
            best = max(mine, key=lambda r: r.output_tokens_per_s_per_gpu)
            out[f"plan_{k}_best_output_tokens_per_s_per_gpu"] = best.output_tokens_per_s_per_gpu
            out[f"plan_{k}_best_itl_ms"] = best.itl_ms
            out[f"plan_{k}_best_ttft_ms"] = best.ttft_ms
            out[f"plan_{k}_best_gpu_hours_per_million_tokens"] = best.gpu_hours_per_million_tokens
    return out


def anchor_metrics(rows: list[AnchorRow]) -> dict[str, float]:
    out = {f"anchor_{_key(r.anchor)}_predicted_per_node": r.predicted_per_node for r in rows}
    out.update({f"anchor_{_key(r.anchor)}_error_pct": r.error_pct for r in rows})
    out["anchors_within_25pct"] = float(sum(r.met for r in rows))
    out["anchors_compared"] = float(len(rows))
    return out
