"""The benchmark's arithmetic: card bandwidth lookup, bytes read per decode step, MoE expert coverage; the
metrics the scaler's engine profile reads, written and read back."""
from __future__ import annotations

import pytest
import torch

from lab.scale.engine_profile import EngineProfile, load_profile
from lab.studies.roofline.bandwidth import card_bandwidth
from lab.studies.roofline.decode import DecodePoint
from lab.studies.roofline.offline import OfflinePoint
from lab.studies.roofline.step_bytes import StepBytes, expected_active_experts, roofline_step_s, step_bytes
from lab.studies.roofline.suite import PresetResult, benchmark_metrics
from lab.engine.loader import build_model
from lab.engine.model_config import ModelConfig
from lab.engine.presets import get_preset


def _meta_model(preset: str, dtype: torch.dtype, **overrides):
    """Shapes only (meta tensors): byte counts need no weights."""
    return build_model(ModelConfig.from_hf_dict({**get_preset(preset), **overrides}), dtype, torch.device("meta"))


def test_card_bandwidth_by_device_name() -> None:
    assert card_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert card_bandwidth("NVIDIA H200") == 4.8e12
    assert card_bandwidth("NVIDIA A100-SXM4-80GB") == 2.0e12
    assert card_bandwidth("cpu") is None and card_bandwidth(None) is None


def test_expected_active_experts() -> None:
    assert expected_active_experts(64, 6, 1) == pytest.approx(6.0)  # one token: exactly its top-k
    assert expected_active_experts(64, 6, 10_000) == pytest.approx(64.0)  # a large batch hits them all
    assert 6 < expected_active_experts(64, 6, 8) < 48  # overlap between tokens


def test_dense_step_bytes_count_every_weight_but_the_embedding_table() -> None:
    model = _meta_model("r1-distill-qwen-1.5b", torch.bfloat16, num_hidden_layers=1)
    embed = model.model.embed_tokens.weight
    total = sum(p.numel() * 2 for p in model.parameters())
    got = step_bytes(model, kv_bytes_per_token=1000, batch=4, avg_context=10.0)
    assert got.weight_bytes == total - embed.numel() * 2 + 4 * embed.shape[1] * 2
    assert got.kv_bytes == 4 * 10.0 * 1000 and got.expert_bytes_read == 0


def test_moe_step_bytes_grow_with_batch_and_roofline_divides_by_bandwidth() -> None:
    model = _meta_model("tiny", torch.float32)
    b1, b64 = (step_bytes(model, 1280, b, 100.0) for b in (1, 64))
    assert b1.expert_bytes_read < b64.expert_bytes_read and b1.dense_weight_bytes < b64.dense_weight_bytes
    assert roofline_step_s(StepBytes(3e9, 1e9, 3e9, 0.0), 4e12) == pytest.approx(1e-3)


def _point(batch: int, step_s: float, prefill_s: float, prompt_len: int = 512) -> DecodePoint:
    return DecodePoint(batch, prompt_len + 32.5, step_s, batch / step_s, 1.0, 1.0, None, None, None, 1.0, 0.0,
                       prefill_s, batch * prompt_len)


def test_the_metrics_the_engine_profile_reads_round_trip() -> None:
    # b1 prefills 512 tokens in 50 ms (weight-bound); b8 prefills 4096 in 0.2 s: the rate comes from b8.
    decode = [_point(1, 0.003, 0.05), _point(8, 0.008, 0.2)]
    result = PresetResult("deepseek-v2-lite", "NVIDIA H100 80GB HBM3", None, 1.0, 0.5, 31104, 1_310_720, 256, decode,
                          OfflinePoint(1, 1, 1, 1.0, 1.0, 2.0), None)
    m = benchmark_metrics([result])
    assert m["deepseek_v2_lite_prefill_s_per_token"] == pytest.approx(0.2 / 4096)  # 4.8828125e-05
    assert m["deepseek_v2_lite_kv_cache_tokens"] == 1_310_720 and m["deepseek_v2_lite_max_num_seqs"] == 256
    assert m["deepseek_v2_lite_decode_b8_prefill_s"] == 0.2 and m["deepseek_v2_lite_decode_b8_prefill_tokens"] == 4096
    profile = EngineProfile.from_record({"experiment": "01_engine_roofline", "params": {}, "metrics": m})
    assert profile.batch_sizes == (1, 8) and profile.context_tokens == (544,)
    assert profile.decode_step_s == ((0.003,), (0.008,)) and profile.max_num_seqs == 256
    assert (profile.prefill_s_per_token, profile.kv_cache_tokens) == (pytest.approx(4.8828125e-05), 1_310_720)


def test_lab_bench_offline_writes_a_record_and_logs_it(tmp_path, monkeypatch) -> None:
    import mlflow

    from lab.cli import main
    from lab.track import ResultRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["bench", "offline", "--presets", "tiny", "--batches", "1,2", "--decode-prompt-len", "8",
            "--decode-steps", "2", "--num-requests", "2", "--min-len", "4", "--max-len", "6",
            "--hf-time-cap-s", "30", "--max-model-len", "64", "--out", str(tmp_path / "out"), "--tracking-uri", uri,
            "--no-peer-compile", "--peer-warmup-calls", "1", "--peer-repeats", "2",
            "--peer-cb-sizes", '{"num_blocks": 4, "block_size": 16, "max_batch_tokens": 32}']
    assert main(argv) == 0
    record = ResultRecord.load(tmp_path / "out" / "record.json")
    m = record.metrics
    assert {"tiny_decode_b1_tokens_per_s", "tiny_decode_b2_tokens_per_s", "tiny_offline_output_tokens_per_s",
            "tiny_offline_speedup_vs_hf"} <= set(m)
    # Batch 2 decodes two sequences per step: its rate is the step rate times two.
    assert m["tiny_decode_b2_tokens_per_s"] == pytest.approx(2 / m["tiny_decode_b2_step_s"], rel=1e-6)
    assert m["tiny_offline_speedup_vs_hf"] == pytest.approx(
        m["tiny_offline_output_tokens_per_s"] / m["tiny_hf_offline_output_tokens_per_s"], rel=1e-6)
    # The peers ran on the same requests and the engine's batch-1 shape (eager here: compiling takes minutes on a CPU).
    assert m["tiny_offline_speedup_vs_hf_cb"] == pytest.approx(
        m["tiny_offline_output_tokens_per_s"] / m["tiny_hf_cb_offline_output_tokens_per_s"], rel=1e-6)
    assert m["tiny_gptfast_agree_prefix_tokens"] == 3 and m["tiny_hf_static_compiled"] == 0.0
    assert record.params["peer_failures"] == {} and record.params["peer_cb_sizes"] == {"num_blocks": 4, "block_size": 16,
                                                                                      "max_batch_tokens": 32}
    # The record calibrates the scaler as it is: 2 x 8 prompt tokens prefilled at batch 2, 2 timed steps.
    profile = load_profile(tmp_path / "out" / "record.json")
    assert profile.batch_sizes == (1, 2) and profile.context_tokens == (10,)  # 8 + 1 + (2 - 1) / 2 = 9.5 -> 10
    assert profile.prefill_s_per_token == pytest.approx(m["tiny_decode_b2_prefill_s"] / 16)
    assert profile.kv_cache_tokens == m["tiny_kv_cache_tokens"] > 0 and profile.max_num_seqs == 256
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].data.metrics["tiny_decode_b1_tokens_per_s"] == pytest.approx(
        m["tiny_decode_b1_tokens_per_s"])
