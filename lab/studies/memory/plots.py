"""Plots and table rows of the memory study. Each plot returns a new matplotlib `Figure` (never pyplot's).

- `plot_chunks(runs)`: per model, the long prompt's activation peak (MiB, bars; absent off CUDA) and its prefill
  tokens/s (line, right axis) against the chunk size.
- `plot_variants(runs)`: per model, each variant against the reference (= 1): KV tokens per GiB, batch-1 decode
  speed (1 / step time), offline throughput, minimum logits cosine.
- `plot_allocators(comparison)`: allocated and reserved GiB at the end of each engine phase, and the phase's
  peak, one line per allocator configuration.
- `phase_rows(comparison)`: the same as dicts, GiB and fractions rounded for a printed table.
"""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

GIB = 2**30


def _axes(rows: int, cols: int, height: float, width: float = 13.0):
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_chunks(runs) -> Figure:
    fig, axes = _axes(len(runs), 1, 3.2)
    for ax, run in zip(axes[:, 0], runs):
        points = sorted(run.chunks, key=lambda p: p.chunk_tokens)
        labels = [str(p.chunk_tokens) for p in points]
        peaks = [p.peak_activation_bytes / 2**20 if p.peak_activation_bytes is not None else 0.0 for p in points]
        ax.bar(labels, peaks, color="C0", alpha=0.7, label="activation peak (MiB)")
        ax.set_xlabel("prefill chunk (tokens per step)")
        ax.set_ylabel("MiB above weights + KV")
        twin = ax.twinx()
        twin.plot(labels, [p.prefill_tokens_per_s for p in points], "o-", color="C3", label="prefill tokens/s")
        twin.set_ylabel("prefill tokens/s")
        twin.set_ylim(bottom=0)
        note = "" if any(p.peak_activation_bytes is not None for p in points) else " (no allocator peak off CUDA)"
        ax.set_title(f"{run.model}: one long prompt, peak and speed by chunk size{note}")
    return fig


def plot_variants(runs) -> Figure:
    fig, axes = _axes(len(runs), 1, 3.2)
    for ax, run in zip(axes[:, 0], runs):
        if not run.variants:
            ax.set_title(f"{run.model}: no variants measured")
            continue
        ref = run.variants[0]
        measures = {
            "KV tokens/GiB": lambda r: r.kv_tokens_per_gib / ref.kv_tokens_per_gib,
            "decode b=1 speed": lambda r: ref.decode_step_ms / r.decode_step_ms,
            "offline tok/s": lambda r: (r.offline_output_tokens_per_s or 0) / (ref.offline_output_tokens_per_s or 1),
            "logits cosine (min)": lambda r: r.fidelity["cosine_min"] if r.fidelity else 1.0,
        }
        width = 0.8 / len(run.variants)
        for i, result in enumerate(run.variants):
            xs = [j + i * width for j in range(len(measures))]
            ax.bar(xs, [f(result) for f in measures.values()], width, label=result.variant.name)
        ax.set_xticks([j + width * (len(run.variants) - 1) / 2 for j in range(len(measures))], list(measures))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_ylabel(f"x {ref.variant.name}")
        ax.legend(fontsize=8)
        ax.set_title(f"{run.model}: 8-bit variants against {ref.variant.name}")
    return fig


def phase_rows(comparison) -> list[dict]:
    rows = []
    for run in comparison.runs:
        for p in run.phases:
            rows.append({"allocator": run.config, "phase": p.phase, "allocated_gib": round(p.allocated_bytes / GIB, 3),
                         "reserved_gib": round(p.reserved_bytes / GIB, 3),
                         "peak_allocated_gib": round(p.peak_allocated_bytes / GIB, 3), "retries": p.alloc_retries,
                         "ooms": p.ooms, "inactive_split_fraction": p.inactive_split_fraction})
    return rows


def plot_allocators(comparison) -> Figure:
    fig, axes = _axes(1, 1, 4.0)
    ax = axes[0, 0]
    for i, run in enumerate(comparison.runs):
        phases = [p.phase for p in run.phases]
        ax.plot(phases, [p.reserved_bytes / GIB for p in run.phases], "s-", color=f"C{i}", label=f"{run.config}: reserved")
        ax.plot(phases, [p.allocated_bytes / GIB for p in run.phases], "o--", color=f"C{i}", label=f"{run.config}: allocated")
        ax.plot(phases, [p.peak_allocated_bytes / GIB for p in run.phases], "^:", color=f"C{i}", alpha=0.6,
                label=f"{run.config}: peak in phase")
    ax.set_ylabel("GiB")
    ax.set_title(f"Engine run on {comparison.device}: the caching allocator at the end of each phase")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return fig
