"""The benchmark's arithmetic: card bandwidth lookup, bytes read per decode step, MoE expert coverage."""
from __future__ import annotations

import pytest
import torch

from lab.engine.benchmark.bandwidth import card_bandwidth
from lab.engine.benchmark.roofline import StepBytes, expected_active_experts, roofline_step_s, step_bytes
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
