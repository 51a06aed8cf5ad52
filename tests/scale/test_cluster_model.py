"""DeepSeek-V3 architecture arithmetic against the published totals and hand-computed shapes."""
from __future__ import annotations

from dataclasses import replace

import pytest

from lab.engine.presets import PRESETS
from lab.scale.cluster.model import (
    DEEPSEEK_V3, DEEPSEEK_V3_PUBLISHED_ACTIVATED_PARAMS, DEEPSEEK_V3_PUBLISHED_TOTAL_PARAMS, ModelShape,
    activated_params, instance_bytes, params, total_params, weight_bytes,
)


def test_the_61_layer_shape_is_the_presets_shape_with_61_layers() -> None:
    config = dict(PRESETS["deepseek-v3-layers"].hf_config, num_hidden_layers=61)
    assert ModelShape.from_hf_config(config) == DEEPSEEK_V3


def test_total_parameters_match_the_published_671b_within_1_percent() -> None:
    total = sum(total_params(DEEPSEEK_V3).values())
    assert abs(total / DEEPSEEK_V3_PUBLISHED_TOTAL_PARAMS - 1) < 0.01


def test_activated_parameters_round_to_the_published_37b() -> None:
    # "37B" is given to the billion: the count must round to it (36.63B here, -1.0%; see activated_params)
    activated = sum(activated_params(DEEPSEEK_V3).values())
    assert round(activated / 1e9) == DEEPSEEK_V3_PUBLISHED_ACTIVATED_PARAMS / 1e9
    assert abs(activated / DEEPSEEK_V3_PUBLISHED_ACTIVATED_PARAMS - 1) < 0.0135


def test_per_component_parameters_by_hand() -> None:
    # q_a 7168x1536, q_b 1536x(128*192), kv_a 7168x576, kv_b 512x(128*256), o (128*128)x7168
    assert params(DEEPSEEK_V3, "attention") == 7168 * 1536 + 1536 * 24576 + 7168 * 576 + 512 * 32768 + 16384 * 7168
    assert params(DEEPSEEK_V3, "routed_experts") == 3 * 7168 * 2048 == 44_040_192
    assert params(DEEPSEEK_V3, "dense_mlp") == 3 * 7168 * 18432
    assert params(DEEPSEEK_V3, "router") == 256 * 7168
    assert total_params(DEEPSEEK_V3)["routed_experts"] == 58 * 256 * 44_040_192


def test_mla_cache_is_576_elements_per_layer() -> None:
    assert DEEPSEEK_V3.kv_latent_dim == 576
    assert DEEPSEEK_V3.kv_bytes_per_token() == 576 * 2 * 61
    assert DEEPSEEK_V3.kv_bytes_per_token(kv_dtype_bytes=1, layers=10) == 5760


def test_block_fp8_is_one_byte_per_weight_plus_a_float32_scale_per_128x128_block() -> None:
    # one expert: gate and up 2048x7168 (16x56 blocks), down 7168x2048 (56x16 blocks)
    assert instance_bytes(DEEPSEEK_V3, "routed_experts", "fp8-block") == 3 * (2048 * 7168 + 16 * 56 * 4)
    assert instance_bytes(DEEPSEEK_V3, "routed_experts", "bf16") == 3 * 2048 * 7168 * 2
    # embedding, head and router stay bf16 in the FP8 checkpoint
    for component in ("embedding", "head", "router"):
        assert instance_bytes(DEEPSEEK_V3, component, "fp8-block") == instance_bytes(DEEPSEEK_V3, component, "bf16")


def test_fp8_weights_are_about_half_of_bf16() -> None:
    fp8, bf16 = sum(weight_bytes(DEEPSEEK_V3, "fp8-block").values()), sum(weight_bytes(DEEPSEEK_V3, "bf16").values())
    assert 0.5 < fp8 / bf16 < 0.51
    assert 670e9 < fp8 < 676e9  # ~1 byte per weight, plus scales and the bf16 embedding, head and router


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown weight format"):
        instance_bytes(DEEPSEEK_V3, "attention", "int4")
    with pytest.raises(ValueError, match="unknown component"):
        params(DEEPSEEK_V3, "mtp")
    with pytest.raises(ValueError, match="experts_per_token"):
        replace(DEEPSEEK_V3, experts_per_token=300)
    with pytest.raises(ValueError, match="q_lora_rank"):
        ModelShape.from_hf_config(dict(PRESETS["deepseek-v2-lite"].hf_config))
