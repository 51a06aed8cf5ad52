"""Study 10 on a CPU at tiny shapes: the sweep writes a full grid the cluster model reads back, the fit check and
the plan run on it; the engine's fp8 keeps routed experts in the engine dtype and the record says so."""
from __future__ import annotations

import pytest

from lab.scale.cluster import layer_metrics as names
from lab.scale.cluster.layer_profile import measured_layer_time
from lab.studies.deepseek_v3_full.plan import Assumptions, CLUSTERS, plan_cluster
from lab.studies.deepseek_v3_full.routing import RoutingAssumption
from lab.studies.deepseek_v3_full.study import cluster_profile, measure_profile
from lab.studies.deepseek_v3_full.summary import fit_metrics, fit_rows
from lab.studies.deepseek_v3_full.sweep import SweepConfig

TINY = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_attention_heads=4, q_lora_rank=32,
            kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8,
            num_experts_per_tok=2, n_group=2, topk_group=1, vocab_size=256)


@pytest.fixture(scope="module")
def run():
    sweep = SweepConfig((1, 2, 4), (32, 64), (16, 32), RoutingAssumption(), RoutingAssumption("zipf", 1.0),
                        repeats=1, warmup=0)
    return measure_profile({"hf_overrides": TINY, "device": "cpu"}, ("bf16", "fp8"), sweep)


def test_the_sweep_writes_every_grid_point_the_cluster_model_reads(run) -> None:
    for w in ("bf16", "fp8"):
        source = measured_layer_time(run.metrics, w)
        assert source.shard == (1, 8, 1)
        assert set(source.tables) == {("dense", "decode"), ("moe", "decode"), ("dense", "prefill"),
                                      ("moe", "prefill"), ("head", "decode"), ("head", "prefill")}
        assert set(source.tables[("moe", "decode")]) == {"attention", "other", "router", "routed_experts",
                                                         "shared_experts"}
        assert list(source.tables[("moe", "decode")]["routed_experts"].tokens) == [2, 4, 8]  # rows = tokens x k
    assert run.metrics[names.EXPERTS_PER_TOKEN] == 2
    assert run.metrics["routing_uniform_t4_active_experts"] <= 8
    assert "skew_bf16_zipf_moe_decode_routed_experts_t4_s" in run.metrics


def test_fp8_stores_projections_in_fp8_and_routed_experts_in_the_engine_dtype(run) -> None:
    assert run.storage["fp8"]["attention_q_a_proj"] == "float8_e4m3fn"
    assert run.storage["fp8"]["shared_experts"] == "float8_e4m3fn"
    assert run.storage["fp8"]["routed_experts"] == run.storage["bf16"]["routed_experts"] == "float32"  # CPU dtype


def test_fit_check_and_plan_run_on_the_smoke_profile(run) -> None:
    rows = fit_rows(run.metrics, "bf16", (1, 2, 4), (32, 64))
    assert [(r.kind, r.context, r.batch) for r in rows] == [("dense", 32, 2), ("dense", 64, 2), ("moe", 32, 2),
                                                            ("moe", 64, 2)]
    assert fit_metrics(rows)["fit_bf16_within_10pct"] == float(all(r.met for r in rows))
    with pytest.raises(ValueError, match="true shapes"):
        cluster_profile(run, "measured", "bf16", true_shapes=False)
    profile, label = cluster_profile(run, "roofline", "bf16", true_shapes=False)
    assert profile is None and "assumed" in label
    a = Assumptions(25e-6, 8e9, 0.7, 0.5)
    h200 = plan_cluster(CLUSTERS[1], 2000, 500, a)
    assert h200 and all(0 < r.batch <= 256 * 8 for r in h200)  # every layout fits 8 x 141 GB, capped per GPU
    a100_bf16_fits = [r for r in plan_cluster(CLUSTERS[0], 2000, 500, a) if r.batch]
    assert a100_bf16_fits  # FP8-stored weights fit 16 x 80 GB (bf16 would not: 1.34 TB)
