"""A roofline record becomes an EngineProfile: the new metrics read alone, an older record names what it lacks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.scale.engine_profile import EngineProfile, load_profile
from lab.scale.roofline_profile import profile_from_roofline_record

H100_RECORD = Path(__file__).resolve().parents[2] / "reports/records/01_engine_roofline-gpu-h100/record.json"


def record(**extra_metrics: float) -> dict:
    """Two presets swept, as notebook 01's gpu profile does; V2-Lite's at two batches, one context."""
    metrics = {"deepseek_v2_lite_decode_b1_step_s": 0.003, "deepseek_v2_lite_decode_b1_avg_context": 544.5,
               "deepseek_v2_lite_decode_b8_step_s": 0.008, "deepseek_v2_lite_decode_b8_avg_context": 544.5,
               "deepseek_v2_lite_decode_b1_roofline_step_s": 0.001, "tiny_decode_b1_step_s": 1.0,
               "tiny_decode_b1_avg_context": 10.0, **extra_metrics}
    return {"experiment": "01_engine_roofline", "record_id": "r1", "metrics": metrics,
            "params": {"PRESETS": ["tiny", "deepseek-v2-lite"],
                       "engine_flags": [{"max_num_seqs": 64}, {"max_num_seqs": 256}]},
            "environment": {"device": "NVIDIA H100 80GB HBM3"}}


MEASURED = {"deepseek_v2_lite_prefill_s_per_token": 2e-5, "deepseek_v2_lite_kv_cache_tokens": 1_200_000.0,
            "deepseek_v2_lite_max_num_seqs": 128.0}


def test_a_record_with_the_profile_metrics_needs_nothing_passed() -> None:
    p = EngineProfile.from_record(record(**MEASURED), "deepseek-v2-lite")
    assert p.batch_sizes == (1, 8) and p.context_tokens == (544,)  # round(544.5): one context column
    assert p.decode_step_s == ((0.003,), (0.008,))  # the roofline_step_s metric is not a measured step
    assert (p.prefill_s_per_token, p.kv_cache_tokens, p.max_num_seqs) == (2e-5, 1_200_000, 128)  # metric wins
    assert p.model == "deepseek-v2-lite" and p.device == "NVIDIA H100 80GB HBM3" and "given" not in p.source
    assert p.step_time_s(4.5, 2000) == pytest.approx(0.0055)  # linear in batch, flat in context
    # 1000 prompt tokens at 20 us, then 100 steps at batch 8 (8 ms): 0.02 + 0.8 s.
    assert p.service_time_s(8, 1000, 100) == pytest.approx(0.82)
    assert EngineProfile.from_dict(p.to_dict()) == p


def test_one_swept_preset_needs_no_name() -> None:
    data = record(**MEASURED)
    data["metrics"] = {k: v for k, v in data["metrics"].items() if not k.startswith("tiny_")}
    assert EngineProfile.from_record(data).model == "deepseek-v2-lite"  # the prefix mapped back to the preset
    with pytest.raises(ValueError, match=r"sweeps of \['deepseek_v2_lite', 'tiny'\]: name the preset"):
        EngineProfile.from_record(record(**MEASURED))


def test_numbers_passed_fill_what_an_older_record_lacks_and_say_so() -> None:
    p = profile_from_roofline_record(record(), "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=50_000)
    assert (p.prefill_s_per_token, p.kv_cache_tokens) == (1e-4, 50_000)
    assert p.max_num_seqs == 256  # from the notebook record's engine_flags, V2-Lite's entry
    assert p.source.endswith("prefill_s_per_token, kv_cache_tokens given by the caller")


def test_what_the_record_lacks_is_named() -> None:
    with pytest.raises(ValueError, match="lacks deepseek_v2_lite_prefill_s_per_token, deepseek_v2_lite_kv_cache_tok"):
        EngineProfile.from_record(record(), "deepseek-v2-lite")
    with pytest.raises(ValueError, match="no deepseek_v3_decode_b"):
        EngineProfile.from_record(record(), "deepseek-v3")
    plain = record(deepseek_v2_lite_prefill_s_per_token=1e-4, deepseek_v2_lite_kv_cache_tokens=1.0)
    plain["params"] = {}  # `lab bench offline` before it logged max_num_seqs: no engine_flags either
    with pytest.raises(ValueError, match="lacks deepseek_v2_lite_max_num_seqs"):
        EngineProfile.from_record(plain, "deepseek-v2-lite")
    skewed = record(deepseek_v2_lite_decode_b8_avg_context=900.0)
    with pytest.raises(ValueError, match="different contexts"):
        EngineProfile.from_record(skewed, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1)


def test_load_profile_reads_a_record_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record(**MEASURED)))
    assert load_profile(path, "deepseek-v2-lite") == EngineProfile.from_record(record(**MEASURED), "deepseek-v2-lite")


@pytest.mark.skipif(not H100_RECORD.exists(), reason="the committed H100 roofline record is not in this checkout")
def test_the_committed_h100_record() -> None:
    data = json.loads(H100_RECORD.read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="lacks deepseek_v2_lite_prefill_s_per_token, deepseek_v2_lite_kv_cache_tok"):
        load_profile(H100_RECORD, "deepseek-v2-lite")  # made before the study logged them
    p = load_profile(H100_RECORD, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1_000_000)
    assert p.batch_sizes == (1, 8, 32, 128, 256) and p.context_tokens == (544,) and p.max_num_seqs == 256
    assert [row[0] for row in p.decode_step_s] == [data["metrics"][f"deepseek_v2_lite_decode_b{b}_step_s"]
                                                   for b in p.batch_sizes]
    assert p.device == "NVIDIA H100 80GB HBM3"
    # All 256 slots: 1000 prompt tokens at 0.1 ms, then 100 steps of 20.788 ms; 256 / 2.17883 s.
    assert p.capacity_per_s(1000, 100) == pytest.approx(117.494420, rel=1e-6)
