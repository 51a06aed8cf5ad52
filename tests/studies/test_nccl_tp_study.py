"""Study 08: TP decode on the engine (CPU, gloo), its metrics, the article's claim, the note."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.comm.knob_sweep import VariantOutcome
from lab.comm.knobs import parse_variant
from lab.report.claims import claims_by_id
from lab.studies import nccl_tp
from lab.studies.nccl_tp.tp_decode import TPDecodeRow
from tests.comm.fakes import result, row


def test_tp_decode_times_both_sizes_and_only_tp2_has_collectives(tmp_path: Path) -> None:
    engine = {"device": "cpu", "dtype": "float32", "num_gpu_blocks": 32, "hf_overrides": {"num_hidden_layers": 2}}
    config = nccl_tp.TPDecodeConfig(("tiny",), (1, 2), (1, 2), decode_steps=2, prompt_len=8, engine_kwargs=engine)
    rows = nccl_tp.compare_tp_decode(config, tmp_path)
    assert [(r.tp_size, r.batch) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r.step_time_ms > 0 and r.tokens_per_s == pytest.approx(r.batch / r.step_time_ms * 1e3) for r in rows)
    assert [r.all_reduce_share for r in rows[:2]] == [0.0, 0.0]  # one process: nothing to reduce
    assert all(0 < r.all_reduce_share < 1 and r.share_of == "eager step" for r in rows[2:])


def test_tp_metrics_speedup_over_tp1() -> None:
    rows = [TPDecodeRow("r1-distill-qwen-7b", 1, 1, 20.0, 50.0, 0.0),
            TPDecodeRow("r1-distill-qwen-7b", 2, 1, 12.5, 80.0, 0.25)]
    metrics = nccl_tp.tp_metrics(rows)
    assert metrics["tp_r1_distill_qwen_7b_tp2_b1_speedup_over_tp1"] == pytest.approx(1.6)
    assert metrics["tp_r1_distill_qwen_7b_tp2_b1_all_reduce_share"] == 0.25
    assert "tp_r1_distill_qwen_7b_tp1_b1_speedup_over_tp1" not in metrics
    assert nccl_tp.tp_metrics([]) == {}


def test_the_note_says_a_cpu_run_claims_nothing() -> None:
    assert "no NCCL or NVLink number" in nccl_tp.record_note(result([row("all_reduce", 8, 1.0)], backend="gloo"))
    gpu = result([row("all_reduce", 8, 1.0)])
    assert nccl_tp.record_note(gpu).startswith("nccl (NVIDIA H100 80GB HBM3), 2 GPUs")


def test_no_knob_variant_still_gives_a_table_folder(tmp_path: Path) -> None:
    knobs = nccl_tp.run_knobs(nccl_tp.SweepConfig(backend="gloo"), 2, [], tmp_path / "knobs",
                              result([row("all_reduce", 8, 1.0)], backend="gloo"))
    assert knobs.rows == () and (tmp_path / "knobs").is_dir() and "no effect on gloo" in knobs.note


def test_the_claim_is_the_default_against_the_fastest_setting_at_one_size() -> None:
    big = 256 << 20
    default = result([row("all_reduce", 8, 10.0), row("all_reduce", big, 1200.0)])
    outcomes = [VariantOutcome(parse_variant("algo-ring"), result([row("all_reduce", big, 1000.0)])),
                VariantOutcome(parse_variant("proto-ll"), result([row("all_reduce", big, 1500.0)])),
                VariantOutcome(parse_variant("channels-2"), None, "NCCL refused")]
    reading = nccl_tp.claim_metrics(default, outcomes, "256M")
    assert reading.metrics == {"allreduce_latency_baseline_ms": pytest.approx(1.2),
                               "allreduce_latency_ms": pytest.approx(1.0)}
    assert reading.variant == "algo-ring"
    slower = nccl_tp.claim_metrics(default, outcomes[1:], "256M")  # no setting beats the default: it stays
    assert slower.variant == "default" and slower.metrics["allreduce_latency_ms"] == pytest.approx(1.2)
    claim = claims_by_id()["nccl.allreduce"]  # the names the report reads
    assert (claim.experiment, claim.metric, claim.baseline_metric) == (
        "08_nccl_tp", "allreduce_latency_ms", "allreduce_latency_baseline_ms")


def test_no_claim_number_from_gloo_or_an_unrun_size() -> None:
    gloo = nccl_tp.claim_metrics(result([row("all_reduce", 8, 10.0)], backend="gloo"), [], "8")
    assert gloo.metrics == {} and "not measured on gloo" in gloo.note
    missing = nccl_tp.claim_metrics(result([row("all_reduce", 8, 10.0)]), [], "256M")
    assert missing.metrics == {} and "no all_reduce of 256 MiB" in missing.note
