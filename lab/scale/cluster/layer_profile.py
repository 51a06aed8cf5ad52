"""From a layer-profile record to a `LayerTimeSource`: the measured table, and the same carried to other shards.

Contract:
- `measured_layer_time(metrics, weights, tokens_filter=None)` -> `MeasuredLayerTime`: the record's
  `layer_metrics.component_s` numbers of one weight format as grids, per (kind, phase), at the shard the record
  names. Routed-expert times are keyed by rows (tokens x k: one GPU holds every expert, each token reaches k).
  Prefill times (one fresh prompt: its context is itself) form one column over tokens.
  The LM head's work does not depend on the phase: a record with head times for decode only serves prefill too.
  `tokens_filter` keeps only some token counts (the fit check leaves the others out). A grid with a hole is an
  error naming the missing metric.
- `TransferredLayerTime(measured, measured_roofline, target_roofline)`: the measured seconds carried to another
  shard and card by the roofline's ratio, component by component:
      t(work) = measured(work at the measured shard) x target_roofline(work) / measured_roofline(work at the measured shard)
  i.e. the efficiency the card reached on the measured shard (roofline over measured) is assumed to hold for the
  target's shard and card. At the measured shard on the measured card it is the measurement itself. "work at the
  measured shard" keeps tokens, context and expert rows and puts the measured (tp, experts held, expert tp), with
  the active experts a uniform router gives to that many rows over the held experts.
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
        tables[(kind, phase)][component] = MeasuredComponent(axis, contexts, [[grid[t, c] for c in contexts]
                                                                              for t in tokens])
    if ("head", "decode") in tables and ("head", "prefill") not in tables:
        tables[("head", "prefill")] = tables[("head", "decode")]
    return MeasuredLayerTime(dict(tables), _shard(metrics), source)


@dataclass(frozen=True)
class TransferredLayerTime:
    measured: MeasuredLayerTime
    measured_roofline: RooflineLayerTime  # the card and weight format the profile ran on (any efficiency)
    target_roofline: RooflineLayerTime  # the card and weight format to predict for (same efficiencies)

    def _at_measured_shard(self, work: LayerWork) -> LayerWork:
        tp, held, expert_tp = self.measured.shard
        model = self.measured_roofline.model
        tokens = work.expert_rows / model.experts_per_token  # tokens whose k picks land on the held experts
        active = held * (1 - (1 - model.experts_per_token / model.routed_experts) ** tokens)
        return replace(work, tp=tp, experts_held=held, expert_tp=expert_tp, active_experts=active)

    def component_times_s(self, work: LayerWork) -> dict[str, float]:
        base = self._at_measured_shard(work)
        measured = self.measured.component_times_s(base)
        at_base = self.measured_roofline.component_times_s(base)
        target = self.target_roofline.component_times_s(work)
        missing = sorted(set(target) - set(measured))
        if missing:
            raise ValueError(f"the layer profile ({self.measured.source}) has no {missing} for {work.kind} "
                             f"{work.phase}; it has {sorted(measured)}")
        return {c: measured[c] * target[c] / at_base[c] for c in target}


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
