"""Where a predicted anchor's time goes: its step split into components and communication, each against its
physical bound, beside the step the published numbers imply. Torch-free.

Contract: `anchor_splits(settings, a, profile)` -> one `AnchorSplit` per setting, at the step `plan.anchor_rows`
predicts from (decode: the batch chosen under the ITL bound; prefill: one round at the setting's tokens per DP
group): milliseconds per component summed over the model's layers ("attention", "dense_mlp", "router",
"routed_experts", "shared_experts", "other", "head") and per communication part ("ep_dispatch", "ep_combine",
"tp_all_reduce"), the step itself (communication hidden behind compute per layer when `a.overlap_communication`:
the two-micro-batch overlap both sources use), and each component's physical bound: the same work on the target
card and shard on the roofline at efficiency 1, so `bound_fraction` = bound / predicted says how close the
measured kernels come. A decode anchor whose source states a per-user speed or a batch
(`anchors.published_decode_step`) also gets the step the published throughput implies and ours at that batch.
`miss_reasons(rows, splits)`: one sentence per missed anchor: communication-bound (dispatch and combine exceed
the compute they hide behind), a kernel gap (the largest component reaches less than half its bound; the
published kernels' stated speeds from `REFERENCE_KERNELS` beside it), kernels near their bounds (the gap is what
the model leaves out), or, for an optimistic miss, what a running system includes that the model does not.
`split_lines` formats a split, `split_metrics` flattens splits for the record. No number here is tuned.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.scale.cluster.anchors import ANCHORS, published_decode_step
from lab.studies.deepseek_v3_full.plan import AnchorRow, AnchorSetting, Assumptions, MeasuredProfile, anchor_step

COMPONENTS = ("attention", "dense_mlp", "router", "routed_experts", "shared_experts", "other", "head")
COMMUNICATION = ("ep_dispatch", "ep_combine", "tp_all_reduce")
DAY1 = "DeepSeek open-infra-index, 202502 Open-Source Week, Day 1"
DAY3 = "DeepSeek open-infra-index, 202502 Open-Source Week, Day 3"
# What the published systems' kernels reach where our measured layer runs the engine's own, as their sources state.
REFERENCE_KERNELS = {
    "attention": f"FlashMLA, DeepSeek's production MLA decoding kernel, states 3000 GB/s memory-bound and 580 TFLOPS "
                 f"compute-bound on H800 ({DAY1})",
    "routed_experts": f"DeepGEMM's FP8 grouped GEMMs, which DeepSeek and the LMSYS blog run, state up to 1350+ FP8 "
                      f"TFLOPS on Hopper ({DAY3})",
    "shared_experts": f"DeepGEMM's FP8 GEMMs state up to 1350+ FP8 TFLOPS on Hopper ({DAY3})",
    "dense_mlp": f"DeepGEMM's FP8 GEMMs state up to 1350+ FP8 TFLOPS on Hopper ({DAY3})",
}


@dataclass(frozen=True)
class AnchorSplit:
    anchor: str
    phase: str
    tokens_per_gpu: int  # decode: sequences per GPU; prefill: prompt tokens per DP group
    step_ms: float  # the predicted step (decode: one token per sequence; prefill: one round)
    compute_ms: dict[str, float]  # per component, over all layers
    communication_ms: dict[str, float]  # per part, over all layers
    bound_ms: dict[str, float]  # per component: the roofline at efficiency 1 on the same card and shard
    overlap: bool
    published_batch_per_gpu: float | None = None  # decode: what the source states or implies
    published_step_ms: float | None = None
    predicted_step_ms_at_published_batch: float | None = None
    published_how: str = ""

    def share(self, component: str) -> float:
        return self.compute_ms.get(component, 0.0) / sum(self.compute_ms.values())

    def bound_fraction(self, component: str) -> float:
        return self.bound_ms[component] / self.compute_ms[component]

    @property
    def dominant(self) -> str:
        return max(self.compute_ms, key=self.compute_ms.get)


def _sum(step, key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage in step.stages:
        for name, s in getattr(stage, key).items():
            out[name] = out.get(name, 0.0) + 1e3 * s
    return out


def anchor_splits(settings: list[AnchorSetting], a: Assumptions,
                  profile: MeasuredProfile | None = None) -> list[AnchorSplit]:
    out = []
    for s in settings:
        anchor = next(x for x in ANCHORS if x.name == s.anchor)
        step, chosen = anchor_step(s, a, profile)
        bound, _ = anchor_step(_fixed(s, chosen), a, profile, roofline_bound=True)
        comm = {k: v for k, v in _sum(step, "communication_parts_s").items() if k in COMMUNICATION}
        split = dict(anchor=s.anchor, phase=anchor.phase, tokens_per_gpu=chosen, step_ms=1e3 * step.itl_s,
                     compute_ms=_sum(step, "compute_s"), communication_ms=comm, bound_ms=_sum(bound, "compute_s"),
                     overlap=a.overlap_communication)
        published = published_decode_step(anchor) if anchor.phase == "decode" else None
        if published is not None:
            batch = max(1, round(published.batch_per_gpu))
            at_theirs, _ = anchor_step(_fixed(s, batch), a, profile)
            split.update(published_batch_per_gpu=published.batch_per_gpu, published_step_ms=1e3 * published.step_s,
                         predicted_step_ms_at_published_batch=1e3 * at_theirs.itl_s, published_how=published.how)
        out.append(AnchorSplit(**split))
    return out


def _fixed(s: AnchorSetting, tokens_per_gpu: int) -> AnchorSetting:
    """The same setting at exactly `tokens_per_gpu` (decode: no ITL bound, so the search stops there)."""
    return AnchorSetting(s.anchor, s.layout, s.context_tokens, tokens_per_gpu, None, s.computed_fraction)


def miss_reasons(rows: list[AnchorRow], splits: list[AnchorSplit], kernel_gap_below: float = 0.5) -> dict[str, str]:
    """One sentence per missed anchor: communication-bound, a kernel gap (the largest component reaches less than
    `kernel_gap_below` of its bound), or, with the kernels near their bounds, what the model leaves out."""
    by_name = {x.anchor: x for x in splits}
    out = {}
    for r in rows:
        if r.met:
            continue
        x = by_name[r.anchor]
        c = x.dominant
        part = (f"{c} takes {x.share(c):.0%} of the predicted {x.phase} compute at {x.bound_fraction(c):.0%} of its "
                "bound")
        comm, compute = sum(x.communication_ms.values()), sum(x.compute_ms.values())
        if r.error_pct > 0:
            why = (f"is optimistic ({r.error_pct:+.0f} %): the model prices a fully loaded step ({part}) with no "
                   "queueing, scheduling gaps or expert imbalance beyond the stated expert_load_imbalance, which a "
                   "number measured on a running system includes")
        elif x.overlap and comm > compute or not x.overlap and comm > 0.5 * compute:
            why = (f"misses ({r.error_pct:+.0f} %), communication-bound: dispatch and combine take {comm:.0f} ms "
                   f"against {compute:.0f} ms of compute per step")
        elif x.bound_fraction(c) < kernel_gap_below:
            kernel = f"; for reference, {REFERENCE_KERNELS[c]}" if c in REFERENCE_KERNELS else ""
            why = f"misses ({r.error_pct:+.0f} %), a kernel gap: {part} on this card and shard{kernel}"
        else:
            why = (f"misses ({r.error_pct:+.0f} %) with its kernels near their bounds ({part}): the gap lies in "
                   "what the model leaves out, such as multi-token prediction")
        out[r.anchor] = f"{r.anchor} {why}."
    return out


def split_lines(x: AnchorSplit) -> list[str]:
    """The split as text: one line per component and communication part, then the published step beside ours."""
    unit = "seqs/GPU" if x.phase == "decode" else "tokens per DP group"
    how = "communication hidden behind compute per layer" if x.overlap else "communication added to compute"
    lines = [f"{x.anchor}: {x.phase} step {x.step_ms:.1f} ms at {x.tokens_per_gpu} {unit} ({how})"]
    for c in sorted(x.compute_ms, key=lambda k: -x.compute_ms[k]):
        lines.append(f"  {c:15} {x.compute_ms[c]:9.2f} ms  {x.share(c):6.1%} of compute   bound "
                     f"{x.bound_ms[c]:8.2f} ms ({x.bound_fraction(c):6.1%} of it reached)")
    lines += [f"  {c:15} {ms:9.2f} ms" for c, ms in x.communication_ms.items() if ms > 0]
    if x.published_step_ms is not None:
        lines.append(f"  published: {x.published_how}, {x.published_step_ms:.1f} ms per step; predicted at "
                     f"{x.published_batch_per_gpu:.0f} seqs/GPU: {x.predicted_step_ms_at_published_batch:.1f} ms")
    return lines


def split_metrics(splits: list[AnchorSplit]) -> dict[str, float]:
    out = {}
    for x in splits:
        key = x.anchor.replace("-", "_")
        out[f"anchor_{key}_step_ms"] = x.step_ms
        out.update({f"anchor_{key}_{c}_ms": ms for c, ms in {**x.compute_ms, **x.communication_ms}.items()})
        out.update({f"anchor_{key}_{c}_bound_fraction": x.bound_fraction(c) for c in x.compute_ms
                    if x.bound_ms.get(c, 0) > 0})
        if x.predicted_step_ms_at_published_batch is not None:
            out[f"anchor_{key}_published_step_ms"] = x.published_step_ms
            out[f"anchor_{key}_step_ms_at_published_batch"] = x.predicted_step_ms_at_published_batch
    return out
