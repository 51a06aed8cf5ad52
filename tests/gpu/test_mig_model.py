"""The MIG slice model against numbers computed by hand (see each test's arithmetic)."""

from __future__ import annotations

import pytest

from lab.errors import LabError
from lab.gpu.mig_model import (
    GIB,
    FullCardMeasurement,
    ModelFootprint,
    memory_fit,
    predict_layout,
    predict_slice,
    slice_share,
)
from lab.gpu.mig_plan import parse_layout
from lab.gpu.mig_profiles import profile_table

H100 = profile_table("H100-80GB")
A100 = profile_table("A100-80GB")
# Round inputs so the arithmetic below is checkable by hand; they are not measurements.
CARD = FullCardMeasurement("H100-80GB", decode_step_s=0.010, decode_overhead_s=0.002, prefill_tokens_per_s=33_000)


def test_shares_of_h100_profiles():
    one = slice_share(H100.profile("1g"), H100)
    assert one.sm_share == pytest.approx(16 / 132)
    assert one.memory_share == one.l2_share == 0.125
    assert one.memory_gib == 10.0  # 1/8 of 80
    assert slice_share(H100.profile("3g"), H100).sm_share == pytest.approx(60 / 132)
    assert slice_share(H100.profile("7g"), H100).sm_share == 1.0


def test_a100_7g_loses_sms_but_not_bandwidth():
    full = slice_share(A100.profile("7g"), A100)
    assert full.sm_share == pytest.approx(98 / 108) and full.memory_share == 1.0


def test_decode_scales_bandwidth_part_only():
    # 1g: 2 ms + 8 ms / 0.125 = 66 ms; 3g: 2 + 8 / 0.5 = 18 ms; 7g: 10 ms.
    steps = {p: predict_slice(CARD, slice_share(H100.profile(p), H100), batch=8).decode_step_s
             for p in ("1g", "3g", "7g")}
    assert steps == pytest.approx({"1g": 0.066, "3g": 0.018, "7g": 0.010})
    assert predict_slice(CARD, slice_share(H100.profile("1g"), H100), 8).decode_tokens_per_s == \
        pytest.approx(8 / 0.066)


def test_prefill_scales_with_sm_share():
    # 33000 tok/s * 16/132 = 4000; * 60/132 = 15000.
    assert predict_slice(CARD, slice_share(H100.profile("1g"), H100), 1).prefill_tokens_per_s == \
        pytest.approx(4000)
    assert predict_slice(CARD, slice_share(H100.profile("3g"), H100), 1).prefill_tokens_per_s == \
        pytest.approx(15000)


def test_layout_aggregates():
    # 7x1g at batch 8: 7 * 8 / 0.066 = 848.48 tok/s decode; prefill 7 * 4000 = 28000 (112 of 132 SMs).
    seven = predict_layout(CARD, H100, parse_layout("7x1g", H100), batch_per_slice=8)
    assert seven.decode_tokens_per_s == pytest.approx(56 / 0.066)
    assert seven.prefill_tokens_per_s == pytest.approx(28_000)
    # 1x7g at batch 8: 800 tok/s; 2x3g: 2 * 8 / 0.018 = 888.9 tok/s, prefill 2 * 15000.
    assert predict_layout(CARD, H100, parse_layout("1x7g", H100), 8).decode_tokens_per_s == pytest.approx(800)
    two = predict_layout(CARD, H100, parse_layout("2x3g", H100), 8)
    assert two.decode_tokens_per_s == pytest.approx(16 / 0.018)
    assert two.prefill_tokens_per_s == pytest.approx(30_000)


def test_zero_overhead_makes_decode_inverse_to_bandwidth_share():
    card = FullCardMeasurement("H100-80GB", 0.008, 0.0, 1.0)
    assert predict_slice(card, slice_share(H100.profile("2g"), H100), 4).decode_step_s == pytest.approx(0.032)


@pytest.mark.parametrize("step, overhead", [(0.01, 0.01), (0.01, -0.001), (0.0, 0.0)])
def test_measurement_is_validated(step, overhead):
    with pytest.raises(LabError):
        FullCardMeasurement("H100-80GB", step, overhead, 1000.0)


# R1-Distill-Qwen-1.5B-like shape, rounded: 3.5 GiB of bf16 weights; KV = 28 layers * 2 (K, V)
# * 2 KV heads * 128 dims * 2 bytes = 28672 bytes per token.
QWEN_1_5B = ModelFootprint("r1-distill-qwen-1.5b", weights_bytes=int(3.5 * GIB), kv_bytes_per_token=28_672)


def test_memory_fit_on_1g():
    # 10 GiB - 1 GiB reserve - 3.5 GiB weights = 5.5 GiB = 5905580032 B; / 28672 = 205970.28 -> 205970.
    fit = memory_fit(slice_share(H100.profile("1g"), H100), QWEN_1_5B, reserve_gib=1.0)
    assert fit.kv_tokens == 205_970
    assert fit.fits_context(32_768, sequences=6) and not fit.fits_context(32_768, sequences=7)


def test_weights_that_do_not_fit_leave_no_kv():
    big = ModelFootprint("14b", weights_bytes=28 * GIB, kv_bytes_per_token=196_608)
    fit = memory_fit(slice_share(H100.profile("2g"), H100), big, reserve_gib=1.0)  # 20 GiB slice
    assert not fit.weights_fit and fit.kv_tokens == 0 and not fit.fits_context(1)
    assert memory_fit(slice_share(H100.profile("3g"), H100), big, 1.0).weights_fit  # 40 GiB slice


def test_inventory_memory_overrides_nominal():
    share = slice_share(H100.profile("1g"), H100, memory_gib=9.5)
    # 9.5 - 1 - 3.5 = 5 GiB = 5368709120 B / 28672 = 187245.71 -> 187245.
    assert memory_fit(share, QWEN_1_5B, 1.0).kv_tokens == 187_245
