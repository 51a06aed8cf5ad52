"""What the layer profile says, torch-free: the fit check against held-out batches, and a table per component.

Contract: `fit_rows(metrics, weights, batches, contexts, target_pct=10)` splits the measured batches into fit
points (every other one, both ends kept) and held-out points (the rest), predicts each held-out batch's layer
time (dense and MoE, each context) from the fit points alone (`layer_profile.held_out_errors`: the interpolation
the cluster model does) and returns `FitRow`s; `fit_metrics(rows)` flattens them with the worst error and whether
the issue's target (within 10 %) is met (1) or missed (0). `component_table(metrics, weights, kind, context)`:
rows of (batch, seconds per component) for the notebook's table and plot.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lab.scale.cluster import layer_metrics as names
from lab.scale.cluster.layer_profile import held_out_errors


@dataclass(frozen=True)
class FitRow:
    weights: str
    kind: str
    context: int
    batch: int
    measured_s: float
    predicted_s: float
    error_pct: float
    met: bool


def split_batches(batches: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(fit, held out): every other batch fits, the largest always does (no extrapolation)."""
    if len(batches) < 3:
        raise ValueError(f"a fit check needs >= 3 batches (fit, held out, fit), got {batches}")
    fit = set(batches[::2]) | {batches[-1]}
    return tuple(b for b in batches if b in fit), tuple(b for b in batches if b not in fit)


def fit_rows(metrics: Mapping[str, float], weights: str, batches: tuple[int, ...], contexts: tuple[int, ...],
             target_pct: float = 10.0) -> list[FitRow]:
    fit, held = split_batches(batches)
    rows = []
    for kind in ("dense", "moe"):
        for c in contexts:
            for b, measured, predicted, err in held_out_errors(metrics, weights, kind, fit, held, c):
                rows.append(FitRow(weights, kind, c, b, measured, predicted, err, abs(err) <= target_pct))
    return rows


def fit_metrics(rows: list[FitRow]) -> dict[str, float]:
    out = {f"fit_{r.weights}_{r.kind}_ctx{r.context}_b{r.batch}_error_pct": r.error_pct for r in rows}
    for w in sorted({r.weights for r in rows}):
        mine = [r for r in rows if r.weights == w]
        out[f"fit_{w}_max_abs_error_pct"] = max(abs(r.error_pct) for r in mine)
        out[f"fit_{w}_within_10pct"] = float(all(r.met for r in mine))
    return out


def component_table(metrics: Mapping[str, float], weights: str, kind: str, context: int) -> list[dict[str, float]]:
    by_batch: dict[int, dict[str, float]] = {}
    for key, value in metrics.items():
        m = names.COMPONENT_S.match(key)
        if m and m.group(1) == weights and m.group(2) == kind and m.group(3) == "decode":
            if m.group(4) == "attention" and int(m.group(6)) != context:
                continue
            by_batch.setdefault(int(m.group(5)), {"batch": int(m.group(5))})[m.group(4)] = value
    rows = [by_batch[b] for b in sorted(by_batch)]
    for r in rows:
        r["total"] = sum(v for k, v in r.items() if k != "batch")
    return rows
