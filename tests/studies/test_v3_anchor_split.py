"""Study 10's cluster side on a synthetic V3-size profile: EP layouts priced across the two phases' grids with a
caveat, each anchor's step split against its bound, and one sentence per missed anchor."""
from __future__ import annotations

import pytest

from lab.scale.cluster import layer_metrics as names
from lab.scale.cluster.hardware import H100_SXM
from lab.scale.cluster.layer_time import LayerWork, RooflineLayerTime
from lab.scale.cluster.model import DEEPSEEK_V3 as V3
from lab.studies.deepseek_v3_full.anchor_split import AnchorSplit, anchor_splits, miss_reasons
from lab.studies.deepseek_v3_full.plan import (CLUSTERS, AnchorRow, Assumptions, anchor_rows, anchor_settings,
                                               plan_cluster)
from lab.studies.deepseek_v3_full.study import profile_from_metrics

A = Assumptions(25e-6, 8e9, 0.7, 0.5, node_dedup_prefill=True)
SETTINGS = {"deepseek-online-decode": {"dp": 144, "ep": 144, "redundant_experts": 32, "context_tokens": 5000,
                                       "tokens_per_gpu": 256, "max_itl_s": 0.05},
            "sglang-96xh100-prefill": {"dp": 32, "ep": 32, "redundant_experts": 32, "context_tokens": 2000,
                                       "tokens_per_gpu": 16384}}


@pytest.fixture(scope="module")
def profile():
    """A 'measured' H100 profile at V3's true shapes that is the roofline itself (bf16, efficiencies 0.7 / 0.5),
    on grids like the study's: decode batch 1..512 x context 1024..16384, prefill prompts 512..16384."""
    roof = RooflineLayerTime(V3, H100_SXM, "bf16", 2, 0.7, 0.5)
    m = {names.SHARD_TP: 1, names.SHARD_EXPERTS_HELD: 256, names.SHARD_EXPERT_TP: 1, names.EXPERTS_PER_TOKEN: 8}
    for phase, grid in (("decode", [(t, c) for t in (1, 8, 64, 512) for c in (1024, 4096, 16384)]),
                        ("prefill", [(t, t) for t in (512, 1024, 2048, 4096, 16384)])):
        for kind in ("dense", "moe", "head"):
            if kind == "head" and phase == "prefill":
                continue
            for t, c in grid:
                work = LayerWork(kind, phase, t, c / 2 if phase == "prefill" else c, 1, 256, 1, 8.0 * t,
                                 256 * (1 - (1 - 8 / 256) ** t))
                for comp, seconds in roof.component_times_s(work).items():
                    if comp == "attention" or c == grid[0][1] or phase == "prefill":
                        m[names.component_s("bf16", kind, phase, comp, t, c)] = seconds
    return profile_from_metrics(m, "bf16", "H100-SXM", "synthetic roofline profile")


def test_ep_layouts_are_priced_across_the_phases_grids_with_a_caveat(profile) -> None:
    rows = plan_cluster(CLUSTERS[2], 2000, 500, A, profile)  # 2x8xH100
    assert rows and all(r.output_tokens_per_s_per_gpu for r in rows if r.batch)  # none fails on a grid edge
    ep16 = next(r for r in rows if r.layout == "tp1 dp16 ep16 pp1")
    # decode, 1088 sequences: 68 per GPU x 8 experts / 16 experts held = 34 rows per expert, priced from the measured
    # GPU's 256 experts x 34 = 8704 rows, beyond the decode grid (8..4096): the prefill grid's points, said so
    assert "moe decode routed_experts at 8704 rows: outside the decode grid 8..4096" in ep16.note
    assert "taken from the prefill grid's points" in ep16.note
    # prefill of one 2000-token prompt: 1000 rows per GPU but 62.5 per expert, 16000 rows at the measured shard:
    # inside the prefill grid (4096..131072), so nothing borrowed there (the same layout failed on 1000 rows before)
    assert "prefill" not in ep16.note.split("taken from")[0]


def test_anchor_split_adds_up_and_sits_between_the_stated_efficiencies(profile) -> None:
    settings = anchor_settings(SETTINGS)
    rows, splits = anchor_rows(settings, A, profile), anchor_splits(settings, A, profile)
    decode, prefill = splits
    assert decode.tokens_per_gpu == rows[0].tokens_per_gpu
    # tokens/s per node = sequences per GPU / step x 8 GPUs
    assert rows[0].predicted_per_node == pytest.approx(decode.tokens_per_gpu / (decode.step_ms / 1e3) * 8)
    for x in splits:
        for c in ("attention", "routed_experts", "shared_experts", "dense_mlp", "head"):
            # the profile is the roofline at 0.7 of HBM and 0.5 of the tensor peak, carried to the anchor's card; the
            # grid's linear interpolation of a convex time (prefill attention) costs up to a few %
            assert 0.5 * 0.97 <= x.bound_fraction(c) <= 0.7 * 1.03
        assert x.step_ms >= sum(x.compute_ms.values()) - 1e-9  # overlap hides communication, never compute
    assert decode.published_batch_per_gpu == pytest.approx(1850 / 21)  # 14.8k/8 at 21 tok/s per user
    assert decode.published_step_ms == pytest.approx(1e3 / 21)
    # steps grow with the batch: 88 sequences per GPU take less than the chosen batch exactly when it is larger
    assert (decode.predicted_step_ms_at_published_batch < decode.step_ms) == (88 < decode.tokens_per_gpu)
    assert prefill.published_step_ms is None
    assert prefill.communication_ms["ep_dispatch"] > 0 and "tp_all_reduce" in prefill.communication_ms


def split(compute: dict[str, float], bound: dict[str, float], comm: float = 0.0) -> AnchorSplit:
    return AnchorSplit("sglang-96xh100-decode", "decode", 256, 100.0, compute, {"ep_dispatch": comm}, bound, True)


def row(error_pct: float) -> AnchorRow:
    return AnchorRow("sglang-96xh100-decode", "decode", 22300, 22300 * (1 + error_pct / 100), error_pct,
                     abs(error_pct) <= 25, "")


def test_one_sentence_per_missed_anchor_says_why() -> None:
    gap = split({"attention": 80.0, "router": 20.0}, {"attention": 8.0, "router": 1.0})
    (sentence,) = miss_reasons([row(-52.0)], [gap]).values()
    assert sentence.startswith("sglang-96xh100-decode misses (-52 %), a kernel gap: attention takes 80% of the "
                               "predicted decode compute at 10% of its bound")
    assert "FlashMLA" in sentence
    assert "communication-bound" in miss_reasons([row(-40.0)], [split({"attention": 10.0}, {"attention": 9.0},
                                                                      comm=30.0)])["sglang-96xh100-decode"]
    near = miss_reasons([row(-30.0)], [split({"attention": 10.0}, {"attention": 9.0})])["sglang-96xh100-decode"]
    assert "near their bounds" in near and "multi-token prediction" in near
    assert "is optimistic (+80 %)" in miss_reasons([row(80.0)], [gap])["sglang-96xh100-decode"]
    assert miss_reasons([row(-10.0)], [gap]) == {}  # met: nothing to explain
