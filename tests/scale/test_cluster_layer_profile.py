"""A layer-profile record read into the cluster model: metric names, grids, the shard transfer, the fit check."""
from __future__ import annotations

from dataclasses import replace

import pytest

from lab.scale.cluster import layer_metrics as names
from lab.scale.cluster.hardware import A100_80G, H100_SXM, H200_SXM
from lab.scale.cluster.layer_profile import TransferredLayerTime, held_out_errors, measured_layer_time
from lab.scale.cluster.layer_time import LayerWork, RooflineLayerTime
from lab.scale.cluster.model import DEEPSEEK_V3 as V3

SHARD = {names.SHARD_TP: 1, names.SHARD_EXPERTS_HELD: 256, names.SHARD_EXPERT_TP: 1, names.EXPERTS_PER_TOKEN: 8}


def record(tokens=(1, 2, 4), contexts=(1024, 4096)) -> dict[str, float]:
    """Attention = 1e-6 * tokens * context / 1024 s; each other component 1e-5 * tokens s; head 2e-5 * tokens."""
    m = dict(SHARD)
    for t in tokens:
        for c in contexts:
            m[names.component_s("bf16", "moe", "decode", "attention", t, c)] = 1e-6 * t * c / 1024
        for comp in ("router", "routed_experts", "shared_experts", "other"):
            m[names.component_s("bf16", "moe", "decode", comp, t, contexts[0])] = 1e-5 * t
        m[names.component_s("bf16", "head", "decode", "head", t, contexts[0])] = 2e-5 * t
    return m


def test_metric_names_round_trip() -> None:
    key = names.component_s("fp8", "moe", "prefill", "routed_experts", 512, 1024)
    assert key == "layer_fp8_moe_prefill_routed_experts_t512_ctx1024_s"
    assert names.COMPONENT_S.match(key).groups() == ("fp8", "moe", "prefill", "routed_experts", "512", "1024")
    with pytest.raises(ValueError, match="weights must be one of"):
        names.component_s("int4", "moe", "decode", "attention", 1, 1)


def test_measured_layer_time_interpolates_and_keys_experts_by_rows() -> None:
    source = measured_layer_time(record(), "bf16")
    # 3 tokens at 2560 context: attention interpolated in both axes = 1e-6 * 3 * 2.5; experts at rows 3 * 8 = 24
    work = LayerWork("moe", "decode", 3, 2560, 1, 256, 1, 24.0, 24.0)
    times = source.component_times_s(work)
    assert times["attention"] == pytest.approx(7.5e-6)
    assert times["routed_experts"] == pytest.approx(3e-5)
    assert times["router"] == pytest.approx(3e-5)
    head = source.component_times_s(LayerWork("head", "prefill", 2, 0, 1, 256, 1, 0.0, 0.0))  # decode's table
    assert head == {"head": pytest.approx(4e-5)}


def test_prefill_is_one_column_over_prompt_tokens() -> None:
    m = {**record(), names.component_s("bf16", "dense", "prefill", "attention", 100, 100): 1e-3,
         names.component_s("bf16", "dense", "prefill", "attention", 300, 300): 3e-3}
    work = LayerWork("dense", "prefill", 200, 100, 1, 256, 1, 0.0, 0.0)  # mean causal context: any
    assert measured_layer_time(m, "bf16").component_times_s(work) == {"attention": pytest.approx(2e-3)}


def test_a_grid_with_a_hole_names_the_missing_metric() -> None:
    m = record()
    del m[names.component_s("bf16", "moe", "decode", "attention", 2, 4096)]
    with pytest.raises(ValueError, match="layer_bf16_moe_decode_attention_t2_ctx4096_s"):
        measured_layer_time(m, "bf16")
    with pytest.raises(ValueError, match="no fp8 layer times"):
        measured_layer_time(record(), "fp8")
    with pytest.raises(ValueError, match="not a layer-profile record"):
        measured_layer_time({k: v for k, v in record().items() if k != names.SHARD_TP}, "bf16")


def roofline(card, fmt="bf16", gemm=None) -> RooflineLayerTime:
    return RooflineLayerTime(V3, card, fmt, 2, bandwidth_efficiency=1.0, compute_efficiency=1.0, gemm_format=gemm)


def test_transfer_is_the_measurement_at_the_measured_shard_and_card() -> None:
    source = TransferredLayerTime(measured_layer_time(record(), "bf16"), roofline(H100_SXM), roofline(H100_SXM))
    work = LayerWork("moe", "decode", 2, 1024, 1, 256, 1, 16.0, 256 * (1 - (1 - 8 / 256) ** 2))
    assert source.component_times_s(work) == pytest.approx({"attention": 2e-6, "router": 2e-5,
                                                            "routed_experts": 2e-5, "shared_experts": 2e-5,
                                                            "other": 2e-5})


def test_transfer_to_a_faster_card_scales_memory_bound_parts_by_bandwidth() -> None:
    source = TransferredLayerTime(measured_layer_time(record(), "bf16"), roofline(H100_SXM), roofline(H200_SXM))
    work = LayerWork("moe", "decode", 1, 1024, 1, 256, 1, 8.0, 8.0)
    # at one token every part is bound by bytes: 3.35 TB/s measured, 4.8 TB/s target
    assert source.component_times_s(work)["router"] == pytest.approx(1e-5 * 3.35 / 4.8)


def test_transfer_to_a_tensor_parallel_shard_scales_by_the_roofline_ratio() -> None:
    measured, h100 = measured_layer_time(record(), "bf16"), roofline(H100_SXM)
    source = TransferredLayerTime(measured, h100, h100)
    work = LayerWork("moe", "decode", 1, 1024, 8, 32, 1, 8.0, 8.0)  # tp 8, 32 experts held, 8 rows
    base = LayerWork("moe", "decode", 1, 1024, 1, 256, 1, 8.0, 8.0)  # 1 token's 8 picks, each a fresh expert
    ratio = h100.component_times_s(work)["shared_experts"] / h100.component_times_s(base)["shared_experts"]
    assert ratio == pytest.approx(1 / 8)  # the shared expert split 8 ways, memory bound
    assert measured.component_times_s(base)["shared_experts"] == pytest.approx(1e-5)
    assert source.component_times_s(work)["shared_experts"] == pytest.approx(1e-5 / 8)
    # routed: 8 active experts in both, so the same bytes and the measurement itself
    assert source.component_times_s(work)["routed_experts"] == pytest.approx(1e-5)


def test_fp8_stored_weights_on_an_a100_run_bf16_gemms() -> None:
    with pytest.raises(ValueError, match="no FP8 tensor cores"):
        roofline(A100_80G, "fp8-block")
    a100 = roofline(A100_80G, "fp8-block", gemm="bf16")
    work = LayerWork("dense", "prefill", 4096, 2048, 1, 256, 1, 0.0, 0.0)
    flops = 2 * 4096 * 3 * 18432 * 7168
    assert a100.component_times_s(work)["dense_mlp"] == pytest.approx(flops / 312e12)


def test_held_out_errors_compare_interpolation_with_measurement() -> None:
    m = record(tokens=(1, 2, 4))
    m[names.component_s("bf16", "moe", "decode", "router", 2, 1024)] = 3e-5  # 2 tokens measured off the line
    rows = held_out_errors(m, "bf16", "moe", fit_tokens=(1, 4), check_tokens=(2,), context=1024)
    # fit: attention 2e-6, router 2e-5 (line 1..4), experts 2e-5, shared 2e-5, other 2e-5 -> 8.2e-5
    # measured: same with router 3e-5 -> 9.2e-5
    ((tokens, measured, predicted, error),) = rows
    assert (tokens, measured, predicted) == (2, pytest.approx(9.2e-5), pytest.approx(8.2e-5))
    assert error == pytest.approx(100 * (8.2 / 9.2 - 1))


def test_prefill_attention_is_priced_per_prompt() -> None:
    m = {**record(), names.component_s("bf16", "dense", "prefill", "attention", 100, 100): 1e-3,
         names.component_s("bf16", "dense", "prefill", "attention", 300, 300): 3e-3}
    source = measured_layer_time(m, "bf16")
    # 600 prompt tokens at mean causal context 100 are 3 prompts of 200 tokens (2e-3 s each), not one of 600
    work = LayerWork("dense", "prefill", 600, 100, 1, 256, 1, 0.0, 0.0)
    assert source.component_times_s(work) == {"attention": pytest.approx(6e-3)}
    with pytest.raises(ValueError, match="prompt tokens=400 is outside the measured 100..300"):
        source.component_times_s(LayerWork("dense", "prefill", 400, 200, 1, 256, 1, 0.0, 0.0))


def two_phase_record() -> dict[str, float]:
    """Routed experts: decode at tokens 1, 2, 4, 32 (rows 8..256, 1e-7 s a row); prefill at tokens 16, 32 (rows 128,
    256) at 2e-7 s a row, so which grid answered shows in the number."""
    m = record(tokens=(1, 2, 4, 32))
    for t in (1, 2, 4, 32):
        m[names.component_s("bf16", "moe", "decode", "routed_experts", t, 1024)] = 1e-7 * 8 * t
    for t in (16, 32):
        m[names.component_s("bf16", "moe", "prefill", "attention", t, t)] = 1e-6 * t
        m[names.component_s("bf16", "moe", "prefill", "routed_experts", t, t)] = 2e-7 * 8 * t
    return m


def test_a_phase_answers_from_its_own_grid_first_and_borrows_outside_it_with_a_caveat() -> None:
    source = measured_layer_time(two_phase_record(), "bf16")
    prefill = LayerWork("moe", "prefill", 16, 8, 1, 256, 1, 200.0, 256.0)
    assert source.component_times_s(prefill)["routed_experts"] == pytest.approx(2e-7 * 200)  # own grid only
    assert source.caveats(prefill) == ()
    below = replace(prefill, expert_rows=24.0)  # under the prefill grid (128..256): decode's points, labelled
    assert source.component_times_s(below)["routed_experts"] == pytest.approx(1e-7 * 24)
    (caveat,) = source.caveats(below)
    assert "routed_experts at 24 rows" in caveat and "outside the prefill grid 128..256" in caveat \
        and "decode grid" in caveat
    # between the grids: decode's 32-row point (3.2e-6 s) and prefill's 128-row point (2.56e-5 s), linearly
    assert source.component_times_s(replace(prefill, expert_rows=80.0))["routed_experts"] == \
        pytest.approx(3.2e-6 + (80 - 32) / (128 - 32) * (2.56e-5 - 3.2e-6))
    decode = LayerWork("moe", "decode", 16, 1024, 1, 256, 1, 128.0, 256.0)  # decode's own grid covers 128 rows
    assert source.component_times_s(decode)["routed_experts"] == pytest.approx(1e-7 * 128)
    assert source.reach("moe", "decode", "routed_experts") == (8, 256)
    with pytest.raises(ValueError, match="rows=512 is outside the measured prefill grid 128..256, the decode grid "
                                         "8..256"):
        source.component_times_s(replace(prefill, expert_rows=512.0))
    with pytest.raises(ValueError, match="attention: prompt tokens=64"):  # attention reads the cache: never borrowed
        source.component_times_s(replace(prefill, tokens=64, context_tokens=32))


def test_rows_per_expert_matching_by_hand() -> None:
    from lab.scale.cluster.layer_profile import rows_for_rows_per_expert

    assert rows_for_rows_per_expert(1.0, 256, 8, 256) == 8  # one token: 8 experts with a row each
    # 512 rows per expert on a GPU holding all 256 experts: every expert is hit, so 256 x 512 rows
    assert rows_for_rows_per_expert(512.0, 256, 8, 256) == pytest.approx(131072, rel=1e-9)
    rows = rows_for_rows_per_expert(8.0, 256, 8, 256)
    assert rows / (256 * (1 - (1 - 8 / 256) ** (rows / 8))) == pytest.approx(8.0)


def expert_record(max_tokens: int) -> dict[str, float]:
    """Routed experts measured over rows 8 .. 8 * max_tokens at 1e-7 s a row (decode grid only)."""
    m = dict(SHARD)
    tokens = [t for t in (1, 2, 4, 512, 4096, 16384) if t <= max_tokens]
    for t in tokens:
        for comp, s in (("attention", 1e-6 * t), ("router", 1e-5), ("shared_experts", 1e-5), ("other", 1e-6),
                        ("routed_experts", 1e-7 * 8 * t)):
            m[names.component_s("bf16", "moe", "decode", comp, t, 1024)] = s
    return m


def test_routed_experts_carry_at_equal_rows_per_expert() -> None:
    h100 = roofline(H100_SXM)
    source = TransferredLayerTime(measured_layer_time(expert_record(16384), "bf16"), h100, h100)
    # 4 experts held with 2048 rows: 512 rows each, priced from 256 experts x 512 rows (131072 rows, 1.31072e-2 s);
    # both compute-bound on the roofline, so the ratio is the rows' 2048 / 131072
    work = LayerWork("moe", "decode", 256, 1024, 1, 4, 1, 2048.0, 4.0)
    assert source.component_times_s(work)["routed_experts"] == pytest.approx(1e-7 * 131072 * 2048 / 131072)
    assert source.caveats(work) == ()
    # 2000 rows per expert, beyond the measured 512: still compute-bound at both, so carried and said so
    beyond = replace(work, expert_rows=8000.0)
    assert source.component_times_s(beyond)["routed_experts"] == pytest.approx(1e-7 * 131072 * 8000 / 131072)
    (caveat,) = source.caveats(beyond)
    assert "2000 rows per expert: beyond the measured 512" in caveat and "compute-bound at both" in caveat


def test_routed_experts_refuse_a_regime_never_measured() -> None:
    h100 = roofline(H100_SXM)
    source = TransferredLayerTime(measured_layer_time(expert_record(512), "bf16"), h100, h100)  # up to 16 a expert
    work = LayerWork("moe", "decode", 256, 1024, 1, 4, 1, 2048.0, 4.0)  # 512 rows each: compute-bound
    with pytest.raises(ValueError, match="memory-bound where the target is compute-bound: measure that shape"):
        source.component_times_s(work)
