"""Our engine beside its peers, one row per system and preset: what notebook 01 shows as a table and a plot.

`peer_rows(results)` -> `PeerRow`s: our engine, transformers' plain generate (the floor), and each peer
(`system` is the short name the metrics use, `description` says what it is)
that ran (a failed one keeps its row, numbers empty, its error as the note); `peer_table(results)` is the
same as a pandas DataFrame; `plot_peers(results)` draws batch-1 decode and offline tokens/s side by side.
Decode numbers are steady state, warm-up excluded; the warm-up column is what compiling and graph capture
cost once (our engine: its CUDA-graph capture; the manager: its start). The floor's batch-1 rate includes
its prompt's prefill (`hf_baseline`); every other decode rate is pure decode steps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from lab.studies.roofline.peers import PEER_LABELS
from lab.studies.roofline.suite import PresetResult


@dataclass(frozen=True)
class PeerRow:
    preset: str
    system: str  # engine, hf (the floor), or a peer's metric name part: hf_static, gptfast, hf_cb
    description: str
    decode_b1_tokens_per_s: float | None
    decode_b1_ms_per_token: float | None
    warmup_s: float | None  # compile / graph capture / start, once, outside the rates
    offline_output_tokens_per_s: float | None
    note: str = ""


def peer_rows(results: list[PresetResult]) -> list[PeerRow]:
    rows: list[PeerRow] = []
    for r in results:
        b1 = next((d for d in r.decode if d.batch == 1), None)
        rows.append(PeerRow(r.preset, "engine", "our engine", b1.tokens_per_s if b1 else None,
                            b1.step_s * 1e3 if b1 else None, r.graph_capture_s, r.offline.output_tokens_per_s))
        if r.hf is not None:
            rows.append(PeerRow(r.preset, "hf", "transformers generate (the floor)", r.hf.decode_b1_tokens_per_s,
                                1e3 / r.hf.decode_b1_tokens_per_s, None, r.hf.offline_output_tokens_per_s,
                                "batch 1 includes the prefill; offline in static batches"))
        if r.peers is None:
            continue
        for name in ("hf_static", "gptfast"):
            d = getattr(r.peers, name)
            note = r.peers.failures.get(name, "" if d is None or d.compiled else "not compiled")
            rows.append(PeerRow(r.preset, name, PEER_LABELS[name], d.tokens_per_s if d else None,
                                d.ms_per_token if d else None, d.compile_warmup_s if d else None, None, note))
        cb = r.peers.hf_cb
        rows.append(PeerRow(r.preset, "hf_cb", PEER_LABELS["hf_cb"], None, None, cb.startup_s if cb else None,
                            cb.output_tokens_per_s if cb else None, r.peers.failures.get("hf_cb", "")))
    return rows


def peer_table(results: list[PresetResult]):
    import pandas as pd

    return pd.DataFrame([asdict(row) for row in peer_rows(results)])


def plot_peers(results: list[PresetResult]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = peer_rows(results)
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 0.6 + 2.4 * len(results)), squeeze=False)
    for (ax_decode, ax_offline), r in zip(axes, results):
        mine = [row for row in rows if row.preset == r.preset]
        for ax, field, title in ((ax_decode, "decode_b1_tokens_per_s", "batch-1 decode, tokens/s"),
                                 (ax_offline, "offline_output_tokens_per_s", "offline set, output tokens/s")):
            shown = [row for row in mine if getattr(row, field) is not None]
            ax.barh([row.system + (" (eager)" if row.note == "not compiled" else "") for row in shown],
                    [getattr(row, field) for row in shown],
                    color=["tab:blue" if row.system == "engine" else "tab:gray" for row in shown])
            ax.invert_yaxis()
            ax.set_title(f"{r.preset} on {r.device_name}: {title}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
