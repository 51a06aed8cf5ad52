"""Decode tokens/s against batch size, beside the HBM roofline, one panel per preset.

`plot_roofline(results)` returns a matplotlib Figure: measured tokens/s (dots) and the roofline
tokens/s = B / t_step_min (dashed) on log-log axes, MBU annotated at each point, and at batch 1 the
transformers floor and the compiled decode peers that ran. On a card of unknown bandwidth (or a CPU)
only the measured curves are drawn.
"""
from __future__ import annotations

from lab.studies.roofline.suite import PresetResult


def plot_roofline(results: list[PresetResult]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        batches = [d.batch for d in r.decode]
        ax.plot(batches, [d.tokens_per_s for d in r.decode], "o-", label="engine (measured)")
        if r.bandwidth_bytes_per_s:
            ax.plot(batches, [d.roofline_tokens_per_s for d in r.decode], "k--", label="HBM roofline")
            for d in r.decode:
                ax.annotate(f"MBU {d.mbu:.2f}", (d.batch, d.tokens_per_s), textcoords="offset points", xytext=(4, -12), fontsize=8)
        if r.hf is not None:
            ax.plot([1], [r.hf.decode_b1_tokens_per_s], "rx", markersize=9, label="transformers generate, batch 1")
        for name, marker in (("hf_static", "m^"), ("gptfast", "gs")):
            point = getattr(r.peers, name) if r.peers is not None else None
            if point is not None:
                compiled = "compiled" if point.compiled else "eager"
                ax.plot([1], [point.tokens_per_s], marker, markersize=8, label=f"{name} ({compiled}), batch 1")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("decode batch size")
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"{r.preset} on {r.device_name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
