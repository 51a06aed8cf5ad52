"""The benchmark's arithmetic: card bandwidth lookup, bytes read per decode step, MoE expert coverage."""
from __future__ import annotations

import pytest
import torch

from lab.studies.roofline.bandwidth import card_bandwidth
from lab.studies.roofline.step_bytes import StepBytes, expected_active_experts, roofline_step_s, step_bytes
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


def test_lab_bench_offline_writes_a_record_and_logs_it(tmp_path, monkeypatch) -> None:
    import mlflow

    from lab.cli import main
    from lab.track import ResultRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["bench", "offline", "--presets", "tiny", "--batches", "1,2", "--decode-prompt-len", "8",
            "--decode-steps", "2", "--num-requests", "2", "--min-len", "4", "--max-len", "6",
            "--hf-time-cap-s", "30", "--max-model-len", "64", "--out", str(tmp_path / "out"), "--tracking-uri", uri]
    assert main(argv) == 0
    record = ResultRecord.load(tmp_path / "out" / "record.json")
    m = record.metrics
    assert {"tiny_decode_b1_tokens_per_s", "tiny_decode_b2_tokens_per_s", "tiny_offline_output_tokens_per_s",
            "tiny_offline_speedup_vs_hf"} <= set(m)
    # Batch 2 decodes two sequences per step: its rate is the step rate times two.
    assert m["tiny_decode_b2_tokens_per_s"] == pytest.approx(2 / m["tiny_decode_b2_step_s"], rel=1e-6)
    assert m["tiny_offline_speedup_vs_hf"] == pytest.approx(
        m["tiny_offline_output_tokens_per_s"] / m["tiny_hf_offline_output_tokens_per_s"], rel=1e-6)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].data.metrics["tiny_decode_b1_tokens_per_s"] == pytest.approx(
        m["tiny_decode_b1_tokens_per_s"])
