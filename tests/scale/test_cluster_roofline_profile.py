"""A roofline record's decode sweep becomes an EngineProfile; what the record lacks must be passed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.scale.engine_profile import EngineProfile
from lab.scale.roofline_profile import profile_from_roofline_record

H100_RECORD = Path(__file__).resolve().parents[2] / "reports/records/01_engine_roofline-gpu-h100/record.json"


def record(**extra_metrics: float) -> dict:
    metrics = {"deepseek_v2_lite_decode_b1_step_s": 0.003, "deepseek_v2_lite_decode_b1_avg_context": 544.5,
               "deepseek_v2_lite_decode_b8_step_s": 0.008, "deepseek_v2_lite_decode_b8_avg_context": 544.5,
               "tiny_decode_b1_step_s": 1.0, **extra_metrics}
    return {"experiment": "01_engine_roofline", "record_id": "r1", "metrics": metrics,
            "params": {"PRESETS": ["tiny", "deepseek-v2-lite"],
                       "engine_flags": [{"max_num_seqs": 64}, {"max_num_seqs": 256}]},
            "environment": {"device": "NVIDIA H100 80GB HBM3"}}


def test_the_sweep_becomes_one_context_column() -> None:
    p = profile_from_roofline_record(record(), "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=50_000)
    assert p.batch_sizes == (1, 8) and p.context_tokens == (544,)
    assert p.decode_step_s == ((0.003,), (0.008,))
    assert p.max_num_seqs == 256 and p.kv_cache_tokens == 50_000 and p.device == "NVIDIA H100 80GB HBM3"
    assert p.step_time_s(4.5, 2000) == pytest.approx(0.0055)  # linear in batch, flat in context
    assert EngineProfile.from_dict(p.to_dict()) == p


def test_what_the_record_lacks_is_named() -> None:
    with pytest.raises(ValueError, match="no deepseek_v3_decode_b"):
        profile_from_roofline_record(record(), "deepseek-v3", prefill_s_per_token=1e-4, kv_cache_tokens=1)
    plain = record()
    plain["params"] = {}
    with pytest.raises(ValueError, match="max_num_seqs"):
        profile_from_roofline_record(plain, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1)
    skewed = record(deepseek_v2_lite_decode_b8_avg_context=900.0)
    with pytest.raises(ValueError, match="different contexts"):
        profile_from_roofline_record(skewed, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1)
    with pytest.raises(TypeError):
        profile_from_roofline_record(record(), "deepseek-v2-lite")  # no silent prefill or KV numbers
    with pytest.raises(ValueError, match="no decode_step_s_b"):
        EngineProfile.from_record(record())  # why the adapter exists: the record has none of those names


@pytest.mark.skipif(not H100_RECORD.exists(), reason="the committed H100 roofline record is not in this checkout")
def test_the_committed_h100_record_reads() -> None:
    data = json.loads(H100_RECORD.read_text(encoding="utf-8"))
    p = profile_from_roofline_record(data, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1)
    assert [row[0] for row in p.decode_step_s] == [data["metrics"][f"deepseek_v2_lite_decode_b{b}_step_s"]
                                                   for b in p.batch_sizes]
