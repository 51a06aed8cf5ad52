"""Study 07's pieces on a CPU: slices per layout (fake NVML for MIG), fits, predictions and targets by hand."""
from __future__ import annotations

import math

import pytest

from lab.errors import LabError
from lab.gpu.mig import read_mig_inventory
from lab.gpu.mig_model import slice_share
from lab.gpu.mig_profiles import profile_table
from lab.studies.launcher import ReplicaSpec
from lab.studies.mig.fit import fit_rows, footprint
from lab.studies.mig.predict import LayoutOutcome, SliceNumbers, calibrate, predict, targets
from lab.studies.mig.slices import CPU_LABEL, layout_profiles, slice_replicas
from tests.gpu.fake_nvml import FakeGpu, FakeNvml

H100 = profile_table("H100-80GB")


@pytest.mark.parametrize("layout, names", [
    ("1x7g", ["7g.80gb"]), ("7x1g", ["1g.10gb"] * 7), ("2x3g", ["3g.40gb"] * 2),
    ("3x2g+1x1g", ["2g.20gb"] * 3 + ["1g.10gb"]),
])
def test_the_four_layouts_resolve_to_their_profiles(layout, names):
    assert [p.name for p in layout_profiles(layout, H100)] == names


def test_emulated_slices_carry_the_flag_and_cpu_stand_ins_say_no_partition():
    emulated = slice_replicas("2x3g", H100, "emulated", ReplicaSpec(device="cuda"))
    assert [r.label for r in emulated] == ["emulated 3g.40gb"] * 2
    assert all(r.process.command[-2:] == ("--emulate-mig", "3g.40gb") for r in emulated)
    cpu = slice_replicas("3x2g+1x1g", H100, "cpu", ReplicaSpec(device="cpu"))
    assert [r.label for r in cpu] == [CPU_LABEL] * 4 and all("--emulate-mig" not in r.process.command for r in cpu)
    assert len({r.name for r in cpu}) == 4


def test_mps_slices_join_the_daemon_and_say_so():
    env = {"CUDA_MPS_PIPE_DIRECTORY": "/run/lab-mps/pipe", "CUDA_MPS_LOG_DIRECTORY": "/run/lab-mps/log"}
    replicas = slice_replicas("3x2g+1x1g", H100, "emulated-mps", ReplicaSpec(device="cuda"), mps_env=env)
    assert [r.label for r in replicas] == ["emulated 2g.20gb (mps)"] * 3 + ["emulated 1g.10gb (mps)"]
    assert all(r.process.command[-4:-2] == ("--emulate-mig", r.profile.name) for r in replicas)
    assert all(r.process.command[-2:] == ("--emulate-mig-with", "mps") and r.process.env == env for r in replicas)
    with pytest.raises(LabError, match="needs the environment of a running MPS daemon"):
        slice_replicas("2x3g", H100, "emulated-mps", ReplicaSpec(device="cuda"))


def test_mig_slices_come_from_the_inventory_and_a_missing_layout_is_refused():
    inventory = read_mig_inventory(FakeNvml([FakeGpu("H100-80GB", "2x3g")]))
    replicas = slice_replicas("2x3g", H100, "mig", ReplicaSpec(device="cuda"), inventory)
    assert [r.label for r in replicas] == ["MIG 3g.40gb"] * 2
    assert [r.process.env["CUDA_VISIBLE_DEVICES"][:4] for r in replicas] == ["MIG-"] * 2
    with pytest.raises(LabError, match="layout 7x1g needs MIG devices"):
        slice_replicas("7x1g", H100, "mig", ReplicaSpec(device="cuda"), inventory)


def test_r1_distill_footprint_by_hand_and_what_fits_a_1g_slice():
    model = footprint("r1-distill-qwen-1.5b")
    # 151936*1536 embeddings and head, 28 layers of (attention 5,507,072 + MLP 41,287,680 + norms 3,072), norm 1536
    assert model.weights_bytes == 2 * 1_777_088_000
    assert model.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2  # K and V, 28 layers, 2 KV heads of 128, bf16
    rows = fit_rows(layout_profiles("7x1g", H100), H100, [model], [4096, 1_000_000], reserve_gib=1.0)
    assert len(rows) == 1  # one profile, listed once
    kv_tokens = int((10 - 1 - 3_554_176_000 / 2**30) * 2**30 // 28_672)
    assert rows[0]["kv_tokens"] == kv_tokens and rows[0]["fits_4096"] and not rows[0]["fits_1000000"]


def test_predictions_scale_the_full_card_by_the_slice_shares():
    full = SliceNumbers(output_tok_per_s=100.0, chat_ttft_p99_s=0.1, chat_ttft_median_s=0.05, itl_p99_s=0.02,
                        batch_itl_median_s=0.01, chat_input_tokens=32)
    card = calibrate(full, "H100-80GB", decode_overhead_fraction=0.0)
    assert card.prefill_tokens_per_s == 32 / 0.05 and card.decode_step_s == 0.01
    p = predict(full, card, slice_share(H100.profile("1g"), H100))
    assert p.output_tok_per_s == pytest.approx(100 / 8)  # a 1g slice owns 1/8 of the bandwidth
    assert p.itl_p99_s == pytest.approx(0.02 * 8)
    assert p.chat_ttft_p99_s == pytest.approx(0.1 * 132 / 16)  # 16 of 132 SMs
    half = predict(full, calibrate(full, "H100-80GB", 0.5), slice_share(H100.profile("1g"), H100))
    assert half.output_tok_per_s == pytest.approx(100 / (0.5 + 0.5 * 8))  # the overhead does not scale


def test_targets_pick_the_winners_and_judge_them_against_the_model():
    outcomes = [LayoutOutcome("1x7g", 100.0, 90.0, 0.30, 0.25), LayoutOutcome("7x1g", 80.0, 100.0, 0.20, 0.21)]
    ttft, thr = targets(outcomes)
    assert (ttft.layout, round(ttft.error_pct, 2), ttft.met, ttft.predicted_winner) == ("7x1g", -4.76, True, "7x1g")
    assert (thr.layout, round(thr.error_pct, 2), thr.met, thr.predicted_winner) == ("1x7g", 11.11, True, "7x1g")
    nan = targets([LayoutOutcome("2x3g", math.nan, 1.0, math.nan, 1.0)])
    assert not any(t.met for t in nan)
