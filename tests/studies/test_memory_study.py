"""Study 06's arithmetic on hand-computed numbers, its config errors, and one real chunk sweep and variant pair
on a 2-layer tiny engine on the CPU (the allocator's peak is CUDA's: here it must read None, never 0)."""
from __future__ import annotations

import pytest

from lab.errors import LabError
from lab.studies.memory.activation import ChunkPoint, recommend_chunk, reduction, throughput_cost
from lab.studies.memory.study import StudyConfig, allocator_comparison, chunk_sweep
from lab.studies.memory.summary import chunk_metrics, target_metrics, target_rows, variant_metrics
from lab.studies.memory.variants import Variant, VariantResult, Workload, compare, measure_variants, parse_variants

TINY = {"device": "cpu", "hf_overrides": {"num_hidden_layers": 2}, "num_gpu_blocks": 64}


def points() -> list[ChunkPoint]:
    # unchunked 8192 tokens: 1000 MiB peak at 10,000 tok/s; 2048: 300 MiB at 9,600 (4 % cost); 512: 100 MiB at 8,000
    return [ChunkPoint(8192, 1, 0.8192, 10_000.0, 1000 * 2**20), ChunkPoint(2048, 4, 8192 / 9600, 9600.0, 300 * 2**20),
            ChunkPoint(512, 16, 8192 / 8000, 8000.0, 100 * 2**20)]


def test_cost_reduction_and_the_recommended_chunk_by_hand() -> None:
    ps = points()
    assert throughput_cost(ps, ps[1]) == pytest.approx(0.04)
    assert throughput_cost(ps, ps[2]) == pytest.approx(0.20)
    assert reduction(ps, ps[1]) == pytest.approx(0.70)
    assert recommend_chunk(ps, 0.05) == 2048  # 512 is smaller but costs 20 %
    assert recommend_chunk(ps, 0.25) == 512
    assert recommend_chunk(ps, 0.01) == 8192  # nothing chunked is cheap enough: stay unchunked
    m = chunk_metrics(ps)
    assert m["recommended_chunk_tokens"] == 2048 and m["activation_reduction"] == pytest.approx(0.70)
    assert m["activation_peak_mib_c512"] == pytest.approx(100.0) and m["chunk_cost_c8192"] == 0.0


def test_no_peak_off_cuda_is_not_measured_rather_than_met() -> None:
    ps = [ChunkPoint(c, 1, 1.0, 100.0, None) for c in (256, 128)]
    assert reduction(ps, ps[1]) is None
    (row,) = target_rows("tiny", ps, [])
    assert row.met is None and "no CUDA" in row.measured
    assert target_metrics([row]) == {}  # a target never measured counts neither way


def result(name: str, quantization=None, kv="auto", kv_bytes=256.0, step_ms=4.0, offline=1000.0, cosine=None):
    r = VariantResult(Variant(name, quantization, kv), weight_bytes=2**30, kv_bytes_per_token=kv_bytes,
                      kv_capacity_tokens=1000, kv_tokens_per_gib=2**30 / kv_bytes, decode_step_ms=step_ms,
                      decode_tokens_per_s=1e3 / step_ms, offline_output_tokens_per_s=offline, tokens=[], logits=[])
    if cosine is not None:
        r.fidelity = {"cosine_min": cosine, "cosine_mean": cosine, "kl_mean": 0.0, "kl_max": 0.0, "token_match": 1.0}
    return r


def test_variant_ratios_and_targets_by_hand() -> None:
    results = [result("bf16"), result("kv-fp8", kv="fp8", kv_bytes=132.0, cosine=0.995),
               result("w-fp8", quantization="fp8", step_ms=2.0, offline=1400.0, cosine=0.992),
               result("w-int8", quantization="int8", step_ms=2.5, offline=1200.0, cosine=0.985)]
    m = variant_metrics(results)
    assert m["kv_fp8_kv_tokens_per_gib_ratio"] == pytest.approx(256 / 132)
    assert m["w_fp8_decode_b1_speedup"] == pytest.approx(2.0) and m["w_fp8_offline_speedup"] == pytest.approx(1.4)
    rows = {r.name: r for r in target_rows("m", [], results)}
    assert rows["kv_capacity"].met and rows["decode_b1"].met and rows["offline"].met
    assert rows["cosine"].met is False  # int8's 0.985 misses 0.99 for all
    assert target_metrics(list(rows.values()))["targets_met_pct"] == pytest.approx(75.0)


def test_config_and_variant_errors_name_the_field() -> None:
    with pytest.raises(LabError, match="unknown fields \\['bits'\\]"):
        parse_variants({"bf16": {}, "x": {"bits": 8}})
    with pytest.raises(LabError, match="reference and must be plain"):
        StudyConfig.from_parameters(["tiny"], {}, 64, [64], 1, {"kv": {"kv_cache_dtype": "fp8"}}, {})
    with pytest.raises(LabError, match="needs one size >= PROMPT_LEN"):
        StudyConfig.from_parameters(["tiny"], {}, 64, [32, 16], 1, {"bf16": {}}, {})
    with pytest.raises(LabError, match="WORKLOAD has unknown fields \\['steps'\\]"):
        StudyConfig.from_parameters(["tiny"], {}, 64, [64], 1, {"bf16": {}}, {"steps": 3})
    assert allocator_comparison("tiny", {"device": "cpu"}, ["default"], {})[0] is None


def test_a_real_chunk_sweep_on_the_cpu() -> None:
    ps = chunk_sweep("tiny", TINY, 48, [48, 16], repeats=1)
    assert [(p.chunk_tokens, p.steps) for p in ps] == [(48, 1), (16, 3)]  # 48 tokens in chunks of 16: 3 steps
    assert all(p.peak_activation_bytes is None and p.prefill_tokens_per_s > 0 for p in ps)


def test_real_variants_compare_only_steps_with_the_same_context() -> None:
    work = Workload(decode_prompt_len=8, decode_steps=2, offline_requests=0, fidelity_prompts=2,
                    fidelity_prompt_len=8, fidelity_tokens=4)
    ref, same = measure_variants("tiny", [Variant("bf16"), Variant("again")], TINY, work)
    assert ref.tokens == same.tokens  # the same engine twice: deterministic greedy
    report = compare(ref, same)
    assert report["cosine_min"] == pytest.approx(1.0) and report["token_match"] == 1.0
    assert report["compared_steps"] == 8  # every step of both prompts
    kv8 = measure_variants("tiny", [Variant("bf16"), Variant("kv-int8", None, "int8")], TINY, work)[1]
    assert ref.kv_bytes_per_token / kv8.kv_bytes_per_token > 3.0  # float32 on the CPU: 4 bytes -> 1 + scales
    assert 0.9 < kv8.fidelity["cosine_min"] <= 1.0


def test_a_variant_measured_in_a_child_process_comes_back_whole() -> None:
    work = Workload(decode_prompt_len=8, decode_steps=2, offline_requests=0, fidelity_prompts=1,
                    fidelity_prompt_len=8, fidelity_tokens=3)
    here, there = measure_variants("tiny", [Variant("bf16"), Variant("child")], TINY, work, isolate=False)[0], \
        measure_variants("tiny", [Variant("child")], TINY, work, isolate=True)[0]
    assert there.variant.name == "child" and there.tokens == here.tokens  # the same engine, greedy: same tokens
    assert there.kv_bytes_per_token == here.kv_bytes_per_token and there.logits[0].shape == here.logits[0].shape


def test_a_failing_child_names_the_variant() -> None:
    with pytest.raises(LabError, match="variant 'bad' of tiny failed"):
        measure_variants("tiny", [Variant("bad", kv_cache_dtype="fp4")], TINY, Workload(), isolate=True)
