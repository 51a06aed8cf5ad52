"""Layer-time sources, communication and step predictions: hand-computed points and monotonic properties."""
from __future__ import annotations

from dataclasses import replace

import pytest

from lab.scale.cluster.anchors import ANCHORS, anchor, compare
from lab.scale.cluster.comm import all_reduce_s, all_to_all_s
from lab.scale.cluster.hardware import A100_80G, H100_SXM, H200_SXM, H800_SXM, IB_NDR_400_BYTES_PER_S, Fabric, gpu
from lab.scale.cluster.layer_time import LayerWork, MeasuredComponent, MeasuredLayerTime, RooflineLayerTime
from lab.scale.cluster.layout import Layout
from lab.scale.cluster.model import DEEPSEEK_V3 as V3
from lab.scale.cluster.predict import StepModel, Workload, predict_workload

FABRIC = Fabric(gpus_per_node=8, nic_bytes_per_s=IB_NDR_400_BYTES_PER_S, collective_latency_s=0.0)


def roofline(card=H100_SXM, bw=0.8, compute=0.6, fmt="fp8-block") -> RooflineLayerTime:
    return RooflineLayerTime(V3, card, fmt, 2, bandwidth_efficiency=bw, compute_efficiency=compute)


def step_model(layout: Layout, card=H100_SXM, source=None, overlap=False, fabric=FABRIC) -> StepModel:
    return StepModel(V3, card, fabric, layout, source or roofline(card), expert_load_imbalance=1.0,
                     overlap_communication=overlap, dispatch_bytes_per_element=1, combine_bytes_per_element=2)


def test_efficiencies_must_be_given_and_sane() -> None:
    with pytest.raises(TypeError):
        RooflineLayerTime(V3, H100_SXM, "fp8-block", 2)  # no silent default efficiency
    with pytest.raises(ValueError, match="bandwidth_efficiency must be in"):
        roofline(bw=0.0)
    with pytest.raises(ValueError, match="no FP8 tensor cores"):
        roofline(card=A100_80G)


def test_roofline_dense_mlp_at_batch_1_is_its_bytes_over_bandwidth() -> None:
    work = LayerWork("dense", "decode", 1, 100, 8, 32, 1, 8.0, 8.0)
    fp8_bytes = 3 * (18432 * 7168 + 144 * 56 * 4)  # FP8 weights + float32 scales per 128x128 block
    assert roofline().component_times_s(work)["dense_mlp"] == pytest.approx(fp8_bytes / 8 / (3.35e12 * 0.8))


def test_roofline_expert_gemms_turn_compute_bound_with_many_rows() -> None:
    work = LayerWork("moe", "decode", 8, 100, 8, 32, 1, 1e6, 32.0)
    expected = 2 * 1e6 * 3 * 7168 * 2048 / (1979e12 * 0.6)
    assert roofline().component_times_s(work)["routed_experts"] == pytest.approx(expected)


def test_ring_all_reduce_and_all_to_all_by_hand() -> None:
    assert all_reduce_s(1e6, 8, H100_SXM, FABRIC) == pytest.approx(2 * 7 / 8 * 1e6 / 450e9)
    assert all_reduce_s(1e6, 16, H100_SXM, FABRIC) == pytest.approx(2 * 15 / 16 * 1e6 / 50e9)  # crosses the NIC
    assert all_reduce_s(1e6, 1, H100_SXM, FABRIC) == 0.0
    # 32 GPUs over 4 nodes: 7/32 of the bytes over NVLink, 24/32 over the NIC, which is the bottleneck
    assert all_to_all_s(1e6, 32, H100_SXM, FABRIC) == pytest.approx(24 / 32 * 1e6 / 50e9)
    slow = replace(FABRIC, collective_latency_s=1e-5)
    assert all_reduce_s(1e6, 8, H100_SXM, slow) == pytest.approx(all_reduce_s(1e6, 8, H100_SXM, FABRIC) + 1e-5)


def test_higher_bandwidth_decodes_faster() -> None:
    layout = Layout(tp=8, ep=8)
    h100 = step_model(layout, H100_SXM).decode_step(64, 4096).itl_s
    h200 = step_model(layout, H200_SXM).decode_step(64, 4096).itl_s
    assert h200 < h100
    fast_nic = replace(FABRIC, nic_bytes_per_s=2 * IB_NDR_400_BYTES_PER_S)
    wide = Layout(tp=1, dp=32, ep=32)
    assert step_model(wide, fabric=fast_nic).decode_step(1024, 4096).itl_s \
        < step_model(wide).decode_step(1024, 4096).itl_s


def test_larger_batch_more_tokens_per_gpu_but_longer_steps() -> None:
    model = step_model(Layout(tp=8, ep=8))
    steps = [model.decode_step(b, 4096) for b in (1, 8, 64, 256)]
    assert [s.tokens_per_s_per_gpu for s in steps] == sorted(s.tokens_per_s_per_gpu for s in steps)
    assert [s.itl_s for s in steps] == sorted(s.itl_s for s in steps)


def test_overlap_never_slower_and_pp_rounds_cover_every_stage() -> None:
    layout = Layout(tp=8, dp=2, ep=16)
    assert step_model(layout, overlap=True).decode_step(128, 4096).itl_s \
        <= step_model(layout, overlap=False).decode_step(128, 4096).itl_s
    piped = step_model(Layout(tp=8, ep=8, pp=2)).decode_step(128, 4096)
    assert len(piped.stages) == 2
    assert piped.itl_s >= sum(s.total_s for s in piped.stages)
    with pytest.raises(ValueError, match="need >= dp[*]pp"):
        step_model(Layout(tp=8, ep=8, pp=2)).decode_step(1, 4096)


def test_prefill_ttft_grows_with_the_prompt() -> None:
    model = step_model(Layout(tp=8, ep=8))
    assert model.prefill(1000).itl_s < model.prefill(4000).itl_s
    assert model.prefill(4000).itl_s > model.decode_step(1, 4000).itl_s


def test_measured_source_interpolates_and_refuses_what_it_did_not_measure() -> None:
    line = lambda seconds: MeasuredComponent((1, 64), (1000,), ((seconds,), (2 * seconds,)))
    attention = MeasuredComponent((1, 64), (1000, 3000), ((1e-4, 3e-4), (2e-4, 6e-4)))
    tables = {("dense", "decode"): {"attention": attention, "dense_mlp": line(1e-4)},
              ("moe", "decode"): {"attention": attention, "routed_experts": line(3e-4), "router": line(1e-5)},
              ("head", "decode"): {"head": line(2e-4)}}
    source = MeasuredLayerTime(tables, shard=(8, 32, 1), source="test table")
    work = LayerWork("dense", "decode", 1, 2000, 8, 32, 1, 8.0, 8.0)
    assert source.component_times_s(work)["attention"] == pytest.approx(2e-4)  # midway in context
    with pytest.raises(ValueError, match="tokens=128 is outside the measured 1..64"):
        source.component_times_s(replace(work, tokens=128))
    with pytest.raises(ValueError, match="measure that shard"):
        source.component_times_s(replace(work, tp=4))
    with pytest.raises(ValueError, match="no moe prefill"):
        source.component_times_s(replace(work, kind="moe", phase="prefill"))
    # a whole decode step at batch 1: 3 dense layers, 58 MoE layers (1 token x 8 experts / ep 8 = 1 expert row),
    # the head; communication is not part of compute_s
    step = step_model(Layout(tp=8, ep=8), source=source).decode_step(1, 1000)
    assert sum(step.stages[0].compute_s.values()) == pytest.approx(3 * (1e-4 + 1e-4) + 58 * (1e-4 + 1e-5 + 3e-4) + 2e-4)


def test_workload_prediction_and_deployment_balance() -> None:
    prefill = step_model(replace(Layout(tp=1, dp=32, ep=32), role="prefill"), overlap=True)
    decode = step_model(replace(Layout(tp=1, dp=32, ep=32), role="decode"), overlap=True)
    workload = Workload(prompt_tokens=2000, output_tokens=500, decode_batch=32 * 64)
    one = predict_workload(prefill, 1, decode, 1, workload, prefill_tokens_per_group=4096)
    more_decode = predict_workload(prefill, 1, decode, 3, workload, prefill_tokens_per_group=4096)
    assert one.ttft_s > 0 and one.itl_s > 0
    assert one.output_tokens_per_s_per_gpu <= one.decode_tokens_per_s_per_gpu
    decode_out, prefill_out = one.decode_tokens_per_s_per_gpu * 32, one.prefill_tokens_per_s_per_gpu * 32 * 500 / 2000
    assert one.output_tokens_per_s_per_gpu == pytest.approx(min(decode_out, prefill_out) / 64)
    assert more_decode.output_tokens_per_s_per_gpu == pytest.approx(min(3 * decode_out, prefill_out) / 128)


def test_anchor_error_is_signed_percent_per_node() -> None:
    decode = anchor("deepseek-online-decode")
    assert compare(decode, 14.8e3 / 8).error_pct == pytest.approx(0.0)
    assert compare(decode, 2000).error_pct == pytest.approx(100 * (16000 / 14800 - 1))
    assert all(a.gpu in ("H800", "H100-SXM") and a.source for a in ANCHORS)
    assert gpu(decode.gpu) is H800_SXM
    with pytest.raises(ValueError, match="no anchor"):
        anchor("made-up")


def test_node_deduplicated_dispatch_by_hand() -> None:
    from lab.scale.cluster.comm import distinct_remote_nodes

    # 8 destinations over 4 nodes of 8: each other node is missed by all 8 with probability (3/4)^8
    assert distinct_remote_nodes(8, 32, 8) == pytest.approx(3 * (1 - 0.75 ** 8))
    assert distinct_remote_nodes(8, 8, 8) == 0.0  # one node: nothing leaves it
    assert all_to_all_s(1e6, 32, H100_SXM, FABRIC, inter_node_bytes=2e5) == pytest.approx(2e5 / 50e9)
    layout = replace(Layout(tp=1, dp=32, ep=32), role="prefill")
    plain = step_model(layout).prefill_throughput(1000, 1000).stages[0].communication_parts_s
    dedup = replace(step_model(layout), node_dedup_phases=("prefill",)).prefill_throughput(1000, 1000)
    # 58 MoE layers; a token's 7168 FP8 bytes cross the NIC once per other node it reaches (2.70 of 3), not per
    # expert copy outside the node (8 x 24/32 = 6)
    assert plain["ep_dispatch"] == pytest.approx(58 * 1000 * 7168 * 6 / 50e9)
    assert dedup.stages[0].communication_parts_s["ep_dispatch"] == pytest.approx(
        58 * 1000 * 7168 * 3 * (1 - 0.75 ** 8) / 50e9)
    assert dedup.stages[0].communication_parts_s["ep_combine"] == pytest.approx(
        58 * 1000 * 7168 * 2 * 3 * (1 - 0.75 ** 8) / 50e9)  # bf16 combine
    decode = replace(step_model(layout), node_dedup_phases=("prefill",)).decode_step(32, 1000)
    assert decode.stages[0].communication_parts_s["ep_dispatch"] == pytest.approx(58 * 1 * 7168 * 6 / 50e9)
    with pytest.raises(ValueError, match="node_dedup_phases"):
        replace(step_model(layout), node_dedup_phases=("train",))


def test_a_step_carries_the_layer_sources_caveats() -> None:
    line = lambda seconds: MeasuredComponent((8, 64), (0,), ((seconds,), (2 * seconds,)))  # noqa: E731
    prompt = MeasuredComponent((512, 4096), (0,), ((1e-3,), (8e-3,)), per_prompt=True)
    tables = {("dense", "prefill"): {"attention": prompt, "dense_mlp": line(1e-4)},
              ("moe", "prefill"): {"attention": prompt, "routed_experts": MeasuredComponent((4096, 8192), (0,),
                                                                                            ((1e-3,), (2e-3,)))},
              ("moe", "decode"): {"routed_experts": line(1e-4)},
              ("dense", "decode"): {"dense_mlp": MeasuredComponent((1, 1024), (0,), ((1e-4,), (1e-3,)))},
              ("head", "prefill"): {"head": MeasuredComponent((1, 64), (0,), ((2e-4,), (4e-4,)))}}
    source = MeasuredLayerTime(tables, shard=(8, 32, 1), source="test table")
    # one 1024-token prompt on tp 8 / ep 8: 1024 x 8 / 8 = 1024 rows per GPU, below the prefill grid (4096..8192):
    # the decode grid (8..64) does not reach it either, but their union does (64 .. 4096 interpolated)
    step = step_model(Layout(tp=8, ep=8), source=source).prefill(1024)
    assert any("routed_experts at 1024 rows" in c and "taken from the decode grid" in c for c in step.caveats)
    assert any("dense_mlp at 1024 tokens" in c for c in step.caveats)


def test_the_decode_step_a_published_throughput_implies() -> None:
    from lab.scale.cluster.anchors import published_decode_step

    deepseek = published_decode_step(anchor("deepseek-online-decode"))
    # 14.8k tok/s per node of 8 = 1850 per GPU; at 20-22 tok/s per user that is 84-92 sequences, 1/21 s a token
    assert deepseek.batch_per_gpu == pytest.approx(1850 / 21) and deepseek.step_s == pytest.approx(1 / 21)
    assert "84-92 sequences per GPU" in deepseek.how
    sglang = published_decode_step(anchor("sglang-96xh100-decode"))
    assert sglang.batch_per_gpu == 256 and sglang.step_s == pytest.approx(256 / (22.3e3 / 8))  # ~92 ms
    assert published_decode_step(anchor("sglang-96xh100-prefill")) is None
