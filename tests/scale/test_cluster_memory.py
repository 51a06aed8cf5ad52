"""Memory per GPU of hand-computed layouts, its monotonic properties, and layout validation."""
from __future__ import annotations

import pytest

from lab.scale.cluster.hardware import A100_80G, H100_SXM, H200_SXM
from lab.scale.cluster.layout import Deployment, Layout
from lab.scale.cluster.memory import max_batch, memory_per_gpu, stage_memory
from lab.scale.cluster.model import DEEPSEEK_V3 as V3

GIB = 2**30
RESERVE = 4 * GIB  # a test value; real reserves come from measurement


def test_tp8_ep8_bf16_weights_by_hand() -> None:
    attention = 2 * (7168 * 1536 + 7168 * 576 + (1536 * 24576 + 512 * 32768 + 16384 * 7168) / 8)
    norms = 2 * (2 * 7168 + 1536 + 512)
    dense = 2 * 3 * 7168 * 18432 / 8
    moe = 2 * (32 * 3 * 7168 * 2048 + 3 * 7168 * 2048 / 8 + 256 * 7168)  # 32 experts, 1/8 shared, router
    embedding_and_head = 2 * 2 * 129280 * 7168 / 8
    expected = 61 * (attention + norms) + 3 * dense + 58 * moe + embedding_and_head
    got = memory_per_gpu(V3, Layout(tp=8, ep=8), H200_SXM, 0, 0, "bf16", 2, RESERVE)
    assert got.weight_bytes == pytest.approx(expected, rel=1e-12)
    assert got.kv_bytes == 0 and got.total_bytes == pytest.approx(expected + RESERVE)


def test_kv_is_per_dp_group_and_replicated_over_tp() -> None:
    # MLA's latent has no head axis: each TP rank holds its group's whole cache; DP groups split the batch
    kv = lambda layout: memory_per_gpu(V3, layout, H200_SXM, 64, 4096, "fp8-block", 2, 0).kv_bytes
    assert kv(Layout(tp=8, ep=8)) == 64 * 4096 * 576 * 2 * 61
    assert kv(Layout(tp=1, dp=8, ep=8)) == 8 * 4096 * 576 * 2 * 61
    assert kv(Layout(tp=1, dp=8, ep=8)) == memory_per_gpu(V3, Layout(tp=1, dp=8, ep=8), H200_SXM, 57, 4096,
                                                           "fp8-block", 2, 0).kv_bytes  # ceil(57/8) = 8


def test_pipeline_stages_split_layers_and_hold_embedding_and_head_at_the_ends() -> None:
    layout = Layout(tp=8, ep=8, pp=2)
    assert layout.stage_layers(V3) == [(3, 28), (0, 30)]
    first, last = stage_memory(V3, layout, H100_SXM, 10, 1000, "fp8-block", 2, 0)
    assert first.kv_bytes == 10 * 1000 * 576 * 2 * 31 and last.kv_bytes == 10 * 1000 * 576 * 2 * 30
    assert Layout(pp=4).stage_layers(V3) == [(3, 13), (0, 15), (0, 15), (0, 15)]


def test_what_fits_on_the_planning_targets() -> None:
    fits = lambda layout, gpu, fmt: memory_per_gpu(V3, layout, gpu, 0, 0, fmt, 2, RESERVE).fits
    assert not fits(Layout(tp=8, ep=8), H200_SXM, "bf16")  # 1.34 TB of bf16 weights on 8 x 141 GB
    assert fits(Layout(tp=8, ep=8), H200_SXM, "fp8-block")
    assert not fits(Layout(tp=16, ep=16), A100_80G, "bf16")
    assert fits(Layout(tp=16, ep=16), A100_80G, "fp8-block")


def test_max_batch_is_the_edge_of_fitting() -> None:
    layout, args = Layout(tp=8, ep=8), (4096, "fp8-block", 2, RESERVE)
    n = max_batch(V3, layout, H200_SXM, *args)
    assert n > 0
    assert memory_per_gpu(V3, layout, H200_SXM, n, *args).fits
    assert not memory_per_gpu(V3, layout, H200_SXM, n + 1, *args).fits
    assert max_batch(V3, layout, H200_SXM, 4096, "bf16", 2, RESERVE) == 0


def test_more_gpus_less_memory_per_gpu() -> None:
    per_gpu = [memory_per_gpu(V3, layout, H100_SXM, 256, 4096, "fp8-block", 2, RESERVE).total_bytes
               for layout in (Layout(tp=8, ep=8), Layout(tp=8, dp=2, ep=16), Layout(tp=8, dp=4, ep=32),
                              Layout(tp=8, dp=4, ep=32, pp=2))]
    assert per_gpu == sorted(per_gpu, reverse=True) and len(set(per_gpu)) == 4


def test_longer_context_and_larger_batch_need_more_memory() -> None:
    m = lambda batch, ctx: memory_per_gpu(V3, Layout(tp=8, ep=8), H200_SXM, batch, ctx, "fp8-block", 2, 0).total_bytes
    assert m(1, 1000) < m(2, 1000) < m(2, 2000)


@pytest.mark.parametrize("layout, message", [
    (Layout(tp=3), "tp=3 must divide the 128 attention heads"),
    (Layout(dp=3, ep=3), "ep=3 must divide the 256 expert slots"),
    (Layout(tp=8, ep=16), "ep=16 must divide the tp[*]dp=8 GPUs"),
    (Layout(tp=0), "tp must be >= 1"),
    (Layout(pp=62), "pp=62 exceeds the 61 layers"),
    (Layout(role="both"), "role must be one of"),
])
def test_invalid_layouts_say_why(layout: Layout, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout.validate(V3)


def test_redundant_experts_change_what_ep_must_divide() -> None:
    Layout(tp=1, dp=144, ep=144, redundant_experts=32).validate(V3)  # 288 slots, 2 per GPU
    assert Layout(tp=1, dp=144, ep=144, redundant_experts=32).experts_per_gpu(V3) == 2
    with pytest.raises(ValueError, match="ep=144 must divide the 256 expert slots"):
        Layout(tp=1, dp=144, ep=144).validate(V3)


def test_a_deployment_counts_gpus_and_refuses_half_disaggregation() -> None:
    d = Deployment.disaggregated(Layout(dp=32, ep=32, role="prefill"), 2, Layout(dp=144, ep=144, role="decode"), 1)
    assert d.gpus == 208 and d.gpus_of("prefill") == 64
    with pytest.raises(ValueError, match="both prefill and decode"):
        Deployment(((Layout(role="decode"), 1),))
    with pytest.raises(ValueError, match="expected a prefill and a decode layout"):
        Deployment.disaggregated(Layout(), 1, Layout(role="decode"), 1)
