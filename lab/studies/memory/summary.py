"""What the memory study measured, as record metrics and the issue's targets (never tuned to).

Contract:
- `prefix(model)`: the metric prefix of a model (`r1_distill_qwen_1_5b`; `lab.track.flatten.metric_prefix`).
- `chunk_metrics(points, max_cost)`: per chunk size `activation_peak_mib_c<N>`, `prefill_tokens_per_s_c<N>`,
  `chunk_cost_c<N>` (1 - tokens/s over the unchunked point's), the recommended chunk
  (`recommended_chunk_tokens`) and its `activation_reduction` (None off CUDA: no peak to read).
- `variant_metrics(results)`: each variant's `VariantResult.metrics()` under `<variant>_...`, plus the ratios
  against the reference (the first variant): `<variant>_kv_tokens_per_gib_ratio`, `_decode_b1_speedup`,
  `_offline_speedup`.
- `target_rows(model, points, results, max_cost)`: the issue's targets (`TARGETS`): activation peak >= 62 %
  lower at <= 5 % throughput cost, FP8 KV >= 1.9x tokens per GiB, FP8 weights >= 1.6x batch-1 decode step and
  >= 1.3x offline throughput, logits cosine >= 0.99 for every 8-bit variant. A target whose measurement did not
  run (no CUDA peak, no fp8 variant) is a row with `met` None, never a pass.
- `target_metrics(rows)`: `<model>_target_<name>_met` (1/0, absent when not measured) and `targets_met_pct`
  over the rows that were measured.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lab.studies.memory.activation import ChunkPoint, recommend_chunk, reduction, throughput_cost
from lab.studies.memory.variants import VariantResult
from lab.track.flatten import metric_prefix as prefix

MIN_ACTIVATION_REDUCTION = 0.62  # the article's cut of activation memory
MAX_CHUNK_COST = 0.05  # ... at no more than 5 % throughput
MIN_KV_RATIO = 1.9  # fp8 KV: tokens per GiB against bf16
MIN_DECODE_SPEEDUP = 1.6  # fp8 weights: batch-1 decode step
MIN_OFFLINE_SPEEDUP = 1.3  # fp8 weights: offline throughput
MIN_COSINE = 0.99  # every 8-bit variant's logits against bf16
TARGETS = {
    "activation": f"activation peak (long prompt) >= {MIN_ACTIVATION_REDUCTION:.0%} lower, chunked, "
                  f"at <= {MAX_CHUNK_COST:.0%} prefill throughput cost",
    "kv_capacity": f"fp8 KV holds >= {MIN_KV_RATIO:g}x the tokens per GiB of bf16",
    "decode_b1": f"fp8 weights: batch-1 decode step >= {MIN_DECODE_SPEEDUP:g}x faster",
    "offline": f"fp8 weights: offline throughput >= {MIN_OFFLINE_SPEEDUP:g}x",
    "cosine": f"logits cosine >= {MIN_COSINE:g} vs bf16, every 8-bit variant",
}


def chunk_metrics(points: Sequence[ChunkPoint], max_cost: float = MAX_CHUNK_COST) -> dict[str, float]:
    m: dict[str, float] = {}
    for p in points:
        if p.peak_activation_bytes is not None:
            m[f"activation_peak_mib_c{p.chunk_tokens}"] = p.peak_activation_bytes / 2**20
        m[f"prefill_tokens_per_s_c{p.chunk_tokens}"] = p.prefill_tokens_per_s
        m[f"chunk_cost_c{p.chunk_tokens}"] = throughput_cost(list(points), p)
    best = recommend_chunk(list(points), max_cost)
    m["recommended_chunk_tokens"] = float(best)
    cut = reduction(list(points), next(p for p in points if p.chunk_tokens == best))
    if cut is not None:
        m["activation_reduction"] = cut
    return m


def _reference(results: Sequence[VariantResult]) -> VariantResult:
    return results[0]


def _find(results: Sequence[VariantResult], quantization: str | None, kv: tuple[str, ...]) -> VariantResult | None:
    return next((r for r in results[1:] if r.variant.quantization == quantization and r.variant.kv_cache_dtype in kv),
                None)


def variant_metrics(results: Sequence[VariantResult]) -> dict[str, float]:
    ref = _reference(results)
    m: dict[str, float] = {}
    for r in results:
        name = prefix(r.variant.name)
        m.update({f"{name}_{k}": v for k, v in r.metrics().items()})
        if r is ref:
            continue
        m[f"{name}_kv_tokens_per_gib_ratio"] = r.kv_tokens_per_gib / ref.kv_tokens_per_gib
        m[f"{name}_decode_b1_speedup"] = ref.decode_step_ms / r.decode_step_ms
        if r.offline_output_tokens_per_s and ref.offline_output_tokens_per_s:
            m[f"{name}_offline_speedup"] = r.offline_output_tokens_per_s / ref.offline_output_tokens_per_s
    return m


@dataclass(frozen=True)
class TargetRow:
    model: str
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured in this run


def target_rows(model: str, points: Sequence[ChunkPoint], results: Sequence[VariantResult],
                max_cost: float = MAX_CHUNK_COST) -> list[TargetRow]:
    rows: list[tuple[str, str, bool | None]] = []
    if points:
        best = recommend_chunk(list(points), max_cost)
        point = next(p for p in points if p.chunk_tokens == best)
        cut = reduction(list(points), point)
        cost = throughput_cost(list(points), point)
        rows.append(("activation", "no CUDA allocator peak on this device" if cut is None else
                     f"chunk {best}: {cut:.1%} lower, cost {cost:.1%}",
                     None if cut is None else cut >= MIN_ACTIVATION_REDUCTION and cost <= max_cost))
    if results:
        ref = _reference(results)
        kv = _find(results, None, ("fp8", "fp8_e4m3"))
        rows.append(("kv_capacity", "no fp8 KV variant" if kv is None else
                     f"{kv.kv_tokens_per_gib / ref.kv_tokens_per_gib:.2f}x "
                     f"({kv.kv_bytes_per_token:.0f} vs {ref.kv_bytes_per_token:.0f} B/token)",
                     None if kv is None else kv.kv_tokens_per_gib / ref.kv_tokens_per_gib >= MIN_KV_RATIO))
        w = _find(results, "fp8", ("auto",))
        speedup = None if w is None else ref.decode_step_ms / w.decode_step_ms
        rows.append(("decode_b1", "no fp8-weights variant" if w is None else
                     f"{speedup:.2f}x ({w.decode_step_ms:.2f} vs {ref.decode_step_ms:.2f} ms)",
                     None if w is None else speedup >= MIN_DECODE_SPEEDUP))
        off = None
        if w is not None and w.offline_output_tokens_per_s and ref.offline_output_tokens_per_s:
            off = w.offline_output_tokens_per_s / ref.offline_output_tokens_per_s
        rows.append(("offline", "not measured" if off is None else
                     f"{off:.2f}x ({w.offline_output_tokens_per_s:.0f} vs {ref.offline_output_tokens_per_s:.0f} tok/s)",
                     None if off is None else off >= MIN_OFFLINE_SPEEDUP))
        cosines = {r.variant.name: r.fidelity["cosine_min"] for r in results[1:] if r.fidelity}
        rows.append(("cosine", "no 8-bit variant" if not cosines else
                     ", ".join(f"{k} {v:.4f}" for k, v in cosines.items()),
                     None if not cosines else min(cosines.values()) >= MIN_COSINE))
    return [TargetRow(model, name, TARGETS[name], measured, met) for name, measured, met in rows]


def target_metrics(rows: Sequence[TargetRow]) -> dict[str, float]:
    measured = [r for r in rows if r.met is not None]
    m = {f"{prefix(r.model)}_target_{r.name}_met": float(r.met) for r in measured}
    if measured:
        m["targets_met_pct"] = 100.0 * sum(bool(r.met) for r in measured) / len(measured)
    return m
