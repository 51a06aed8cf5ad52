"""From a layer-profile record to a `LayerTimeSource`: the measured table, and the same carried to other shards.

Contract:
- `measured_layer_time(metrics, weights, tokens_filter=None)` -> `MeasuredLayerTime`: the record's
  `layer_metrics.component_s` numbers of one weight format as grids, per (kind, phase), at the shard the record
  names. Routed-expert times are keyed by rows (tokens x k: one GPU holds every expert, each token reaches k).
  Prefill times (one fresh prompt: its context is itself) form one column over tokens; prefill attention is kept
  per prompt (`MeasuredComponent.per_prompt`), so a step of several shorter prompts is not priced as one long one.
  The LM head's work does not depend on the phase: a record with head times for decode only serves prefill too.
  Components that read no KV cache answer outside their phase's grid from the other phase's points, labelled
  (`layer_time.PHASE_FREE`; the note above `measured_layer_time` says when that is sound).
  `tokens_filter` keeps only some token counts (the fit check leaves the others out). A grid with a hole is an
  error naming the missing metric.
- `TransferredLayerTime(measured, measured_roofline, target_roofline)`: the measured seconds carried to another
  shard and card by the roofline's ratio, component by component:
      t(work) = measured(work at the measured shard) x target_roofline(work) / measured_roofline(work at the measured shard)
  i.e. the efficiency the card reached on the measured shard (roofline over measured) is assumed to hold for the
  target's shard and card. At the measured shard on the measured card it is the measurement itself. "work at the
  measured shard" keeps tokens and context and puts the measured (tp, experts held, expert tp). For the routed
  experts it keeps the *rows per active expert* (the GEMM shape, hence the roofline regime), not the rows: a GPU
  holding 2 experts with 104 rows each is priced from the measured GPU holding all 256 experts with 104 rows each,
  scaled by the rooflines (about 2 / 256 of the time), not from 208 rows spread over 256 experts (a weight-read
  bound shape whose bandwidth efficiency says nothing about a GEMM of 104 rows). Beyond the measured rows per
  expert the nearest measured point is carried only when both shapes sit in the same roofline regime, and the
  caveat says so; otherwise it raises.
- `held_out_errors(metrics, weights, kind, fit_tokens, check_tokens, context)`: the layer's total decode time
  predicted from the fit tokens only, against the measured total at each check token count, as
  (tokens, measured_s, predicted_s, error_pct): the issue's "within 10 % at batch sizes not used for fitting".
Torch-free.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from lab.scale.cluster import layer_metrics as names
from lab.scale.cluster.layer_time import LayerWork, MeasuredComponent, MeasuredLayerTime, RooflineLayerTime


def _shard(metrics: Mapping[str, float]) -> tuple[int, int, int]:
    keys = (names.SHARD_TP, names.SHARD_EXPERTS_HELD, names.SHARD_EXPERT_TP)
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise ValueError(f"the record lacks {missing}: not a layer-profile record (notebook 10)")
    return tuple(int(metrics[k]) for k in keys)  # type: ignore[return-value]


# Why the two phases' grids of a component that reads no KV cache may be joined (lab/studies/deepseek_v3_full/
# sweep.py times both phases on the same modules and the same routing assumption): on the lab's H100 profile
# (moe backend "triton", Hopper) `FusedExperts` picks its kernel by rows alone, not by phase: T*k <= MAX_PAIRS
# (96) rows run the Triton by-id kernels, more rows `torch._grouped_mm`, so decode (8..4096 rows) and prefill
# (4096..131072 rows) run the *same* grouped GEMMs where their ranges meet, and prefill below 4096 rows would
# run what decode measured there. The router, shared expert, dense MLP and norms are the same module calls in
# both phases (the router's fused GEMV only at one token, in either phase). What differs is the timing mode:
# decode as CUDA graph replays, prefill eagerly (launch gaps of ~10 small kernels, tens of us against the
# milliseconds of a grouped GEMM; more, relatively, for the router's small kernels). On a pre-Hopper card the
# phases do *not* share kernels at one row count (decode graphs capture the Triton kernels at any size,
# eager prefill runs the per-expert loop), which is why a phase's own grid always wins inside its range and
# a borrowed point is named in the prediction's caveats, never silent.
def measured_layer_time(metrics: Mapping[str, float], weights: str, tokens_filter: Collection[int] | None = None,
                        source: str = "layer profile") -> MeasuredLayerTime:
    if names.EXPERTS_PER_TOKEN not in metrics:
        raise ValueError(f"the record lacks {names.EXPERTS_PER_TOKEN}: not a layer-profile record (notebook 10)")
    top_k = int(metrics[names.EXPERTS_PER_TOKEN])
    points: dict[tuple[str, str, str], dict[tuple[int, int], float]] = defaultdict(dict)
    for key, value in metrics.items():
        m = names.COMPONENT_S.match(key)
        if m and m.group(1) == weights and (tokens_filter is None or int(m.group(5)) in tokens_filter):
            # a prefill's context is its own prompt (ctx = tokens): one column over tokens
            context = 0 if m.group(3) == "prefill" else int(m.group(6))
            points[(m.group(2), m.group(3), m.group(4))][(int(m.group(5)), context)] = float(value)
    if not points:
        raise ValueError(f"the record has no {weights} layer times ({names.component_s(weights, 'moe', 'decode', 'attention', 1, 1024)}, ...)")
    tables: dict[tuple[str, str], dict[str, MeasuredComponent]] = defaultdict(dict)
    for (kind, phase, component), grid in points.items():
        tokens = sorted({t for t, _ in grid})
        contexts = sorted({c for _, c in grid})
        holes = [names.component_s(weights, kind, phase, component, t, c) for t in tokens for c in contexts
                 if (t, c) not in grid]
        if holes:
            raise ValueError(f"the layer profile's {kind} {phase} {component} grid has holes: {holes[:3]}")
        axis = [t * top_k for t in tokens] if component == "routed_experts" else tokens
        per_prompt = phase == "prefill" and component == "attention"  # one prompt of t tokens per grid point
        tables[(kind, phase)][component] = MeasuredComponent(axis, contexts, [[grid[t, c] for c in contexts]
                                                                              for t in tokens], per_prompt)
    if ("head", "decode") in tables and ("head", "prefill") not in tables:
        tables[("head", "prefill")] = tables[("head", "decode")]
    return MeasuredLayerTime(dict(tables), _shard(metrics), source)


def _active(held: int, rows: float, top_k: int, experts: int) -> float:
    """Experts of `held` expected to receive a token when rows / top_k tokens route uniformly."""
    return held * (1 - (1 - top_k / experts) ** (rows / top_k))


def _regime(terms: tuple[float, float]) -> str:
    """Which roofline term, (memory, compute), bounds a component."""
    return "compute" if terms[1] >= terms[0] else "memory"


def rows_for_rows_per_expert(per_expert: float, held: int, top_k: int, experts: int) -> float:
    """The rows R at which a GPU holding `held` experts gives R / active(R) = `per_expert` (>= 1) rows to each
    expert that receives any; R / active(R) grows from 1 (R -> 0) without bound, so bisect."""
    if per_expert <= 1:
        return top_k  # one token: k experts with one row each
    low, high = 0.0, held * per_expert  # active <= held, so R / active >= R / held
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if mid / _active(held, mid, top_k, experts) < per_expert else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class TransferredLayerTime:
    measured: MeasuredLayerTime
    measured_roofline: RooflineLayerTime  # the card and weight format the profile ran on (any efficiency)
    target_roofline: RooflineLayerTime  # the card and weight format to predict for (same efficiencies)

    def _at_measured_shard(self, work: LayerWork) -> tuple[LayerWork, str]:
        tp, held, expert_tp = self.measured.shard
        base = replace(work, tp=tp, experts_held=held, expert_tp=expert_tp)
        if work.kind != "moe":
            return base, ""
        model = self.measured_roofline.model
        k, experts = model.experts_per_token, model.routed_experts
        per_expert = work.expert_rows / work.active_experts if work.active_experts > 0 else 1.0
        rows = rows_for_rows_per_expert(per_expert, held, k, experts)
        low, high = self.measured.reach(work.kind, work.phase, "routed_experts")
        clamped = min(max(rows, low), high)
        base = replace(base, expert_rows=clamped, active_experts=_active(held, clamped, k, experts))
        if clamped == rows or abs(clamped / base.active_experts / per_expert - 1) < 0.01:
            return base, ""
        target = self.target_roofline.component_terms(work)["routed_experts"]
        at_base = self.measured_roofline.component_terms(base)["routed_experts"]
        measured_per_expert = clamped / base.active_experts
        if _regime(target) != _regime(at_base):
            raise ValueError(f"routed_experts: {per_expert:.0f} rows per expert is outside the measured "
                             f"{low / _active(held, low, k, experts):.0f}..{high / _active(held, high, k, experts):.0f}"
                             f" and the nearest measured shape is {_regime(at_base)}-bound where the target is "
                             f"{_regime(target)}-bound: measure that shape")
        return base, (f"{work.kind} {work.phase} routed_experts at {per_expert:.0f} rows per expert: beyond the "
                      f"measured {measured_per_expert:.0f}, that point's efficiency carried by the roofline ratio "
                      f"({_regime(target)}-bound at both)")

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
        base, _ = self._at_measured_shard(work)
        measured = self.measured.component_times_s(base)
        at_base = self.measured_roofline.component_times_s(base)
        target = self.target_roofline.component_times_s(work)
        missing = sorted(set(target) - set(measured))
        if missing:
            raise ValueError(f"the layer profile ({self.measured.source}) has no {missing} for {work.kind} "
                             f"{work.phase}; it has {sorted(measured)}")
        return {c: measured[c] * target[c] / at_base[c] for c in target}

    def caveats(self, work: LayerWork) -> tuple[str, ...]:
        base, note = self._at_measured_shard(work)
        return self.measured.caveats(base) + ((note,) if note else ())


def held_out_errors(metrics: Mapping[str, float], weights: str, kind: str, fit_tokens: Collection[int],
                    check_tokens: Collection[int], context: int) -> list[tuple[int, float, float, float]]:
    fitted = measured_layer_time(metrics, weights, tokens_filter=fit_tokens, source="fit")
    full = measured_layer_time(metrics, weights, source="all")
    top_k = int(metrics[names.EXPERTS_PER_TOKEN])
    tp, held, expert_tp = fitted.shard
    rows = []
    for t in sorted(check_tokens):
        work = LayerWork(kind, "decode", t, context, tp, held, expert_tp, t * top_k, float(held))
        measured = sum(full.component_times_s(work).values())
        predicted = sum(fitted.component_times_s(work).values())
        rows.append((t, measured, predicted, 100 * (predicted / measured - 1)))
    return rows
