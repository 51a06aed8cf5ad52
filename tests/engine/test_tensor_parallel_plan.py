"""Tensor parallelism without processes: the split rules, the refusals, and each rank's loaded slice.

A rank's shard can be built and loaded without a process group (collectives run only in forward), so here
the shards of ranks 0 and 1 are checked against the unsharded model tensor by tensor: put back together
they are the TP=1 weights (dummy presets drawn full-size and sliced; the loader's checkpoint road is the
same stream and is checked end to end with two gloo processes in test_tensor_parallel.py).
"""
from __future__ import annotations

import pytest
import torch

from lab.engine.args import EngineArgs
from lab.engine.loader import load_model
from lab.engine.model_config import ModelConfig
from lab.engine.parallel.plan import Range, check_devices, check_tensor_parallel, kv_head_range
from lab.engine.parallel.state import TensorParallel
from lab.engine.presets import get_preset

CPU = torch.device("cpu")
# A Qwen2-shaped and a DeepSeek-V3-shaped preset at test size (dummy weights; real preset code paths)
QWEN = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
            vocab_size=512)
V3 = dict(num_hidden_layers=2, vocab_size=512)


def _config(preset: str, **overrides) -> ModelConfig:
    return ModelConfig.from_hf_dict({**get_preset(preset), **overrides})


def test_kv_heads_split_evenly_or_replicate_when_fewer_than_ranks():
    assert [kv_head_range(4, r, 2) for r in range(2)] == [Range(0, 2), Range(2, 4)]
    assert [kv_head_range(1, r, 2) for r in range(2)] == [Range(0, 1), Range(0, 1)]  # one KV head: both hold it
    assert [kv_head_range(2, r, 4) for r in range(4)] == [Range(0, 1), Range(0, 1), Range(1, 2), Range(1, 2)]


@pytest.mark.parametrize("preset, overrides, size, named", [
    ("r1-distill-qwen-1.5b", {}, 8, "num_attention_heads=12"),
    ("r1-distill-qwen-1.5b", dict(num_key_value_heads=3, num_attention_heads=12), 2, "num_key_value_heads=3"),
    ("r1-distill-qwen-1.5b", dict(intermediate_size=8961), 2, "intermediate_size=8961"),
    ("tiny", dict(n_routed_experts=6, n_group=1, topk_group=1), 4, "n_routed_experts=6"),
    ("tiny", dict(vocab_size=1001), 2, "vocab_size=1001"),
    ("deepseek-v2-lite", dict(moe_intermediate_size=1407, n_shared_experts=1), 2, "the shared experts"),
])
def test_a_size_that_does_not_divide_the_model_is_refused_naming_the_dimension(preset, overrides, size, named):
    with pytest.raises(ValueError, match="tensor_parallel_size") as info:
        check_tensor_parallel(_config(preset, **overrides), size)
    assert named in str(info.value)


@pytest.mark.parametrize("preset, sizes", [
    ("r1-distill-qwen-7b", (2, 4)),  # 28 heads, 4 KV heads
    ("r1-distill-qwen-1.5b", (2, 4)),  # 12 heads, 2 KV heads: replicated over 4
    ("deepseek-v2-lite", (2, 4, 8)),
    ("deepseek-v3-layers", (2, 4, 8)),
])
def test_released_shapes_split_over_the_sizes_users_run(preset, sizes):
    for size in sizes:
        check_tensor_parallel(_config(preset), size)


def test_bad_sizes_and_devices_are_refused():
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="tensor_parallel_size must be an integer >= 1"):
            EngineArgs(tensor_parallel_size=bad)
    with pytest.raises(ValueError, match="quantization='fp8' is not supported with tensor_parallel_size > 1"):
        EngineArgs(tensor_parallel_size=2, quantization="fp8")
    with pytest.raises(ValueError, match="needs 2 CUDA devices .* only 1 are visible"):
        check_devices("cuda", 2, 0, 1)
    with pytest.raises(ValueError, match=r"from cuda:1\), but only 2"):
        check_devices("cuda", 2, 1, 2)
    check_devices("cpu", 8, 0, 0)  # gloo ranks share the cores: no device limit


def _shards(preset: str, overrides: dict) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    full = load_model(preset, torch.float32, CPU, seed=3, hf_overrides=overrides).module
    ranks = [load_model(preset, torch.float32, CPU, seed=3, hf_overrides=overrides,
                        tp=TensorParallel(r, 2, CPU)).module for r in range(2)]
    return full, ranks


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


def test_qwen_shards_put_back_together_are_the_unsharded_dummy_weights():
    full, ranks = _shards("r1-distill-qwen-1.5b", QWEN)
    f, r = _params(full), [_params(m) for m in ranks]
    cat0 = lambda name: torch.cat([p[name] for p in r], dim=0)  # noqa: E731
    cat1 = lambda name: torch.cat([p[name] for p in r], dim=1)  # noqa: E731
    assert torch.equal(cat0("model.embed_tokens.weight"), f["model.embed_tokens.weight"])
    assert torch.equal(cat0("lm_head.weight"), f["lm_head.weight"])
    a = "model.layers.1.self_attn"
    d, q, kv = 16, 64, 32  # head_dim, q rows, k rows of the full model (4 heads, 2 KV heads)
    for rank in range(2):  # [q heads of the rank | its k heads | its v heads]
        qkv, full_qkv = r[rank][f"{a}.qkv_proj.weight"], f[f"{a}.qkv_proj.weight"]
        expected = torch.cat([full_qkv[rank * 2 * d:(rank + 1) * 2 * d],
                              full_qkv[q + rank * d:q + (rank + 1) * d],
                              full_qkv[q + kv + rank * d:q + kv + (rank + 1) * d]])
        assert torch.equal(qkv, expected)
        q_bias = f[f"{a}.qkv_proj.bias"][rank * 2 * d:(rank + 1) * 2 * d]
        assert torch.equal(r[rank][f"{a}.qkv_proj.bias"][: 2 * d], q_bias)
    assert torch.equal(cat1(f"{a}.o_proj.weight"), f[f"{a}.o_proj.weight"])
    m = "model.layers.0.mlp"
    gate_up = [p[f"{m}.gate_up_proj.weight"].view(2, 48, 64) for p in r]  # [gate | up] of each rank's 48 rows
    assert torch.equal(torch.cat(gate_up, dim=1).view(192, 64), f[f"{m}.gate_up_proj.weight"])
    assert torch.equal(cat1(f"{m}.down_proj.weight"), f[f"{m}.down_proj.weight"])
    assert torch.equal(r[1]["model.norm.weight"], f["model.norm.weight"])  # norms replicated
    assert ranks[0].kv_cache_spec(torch.float32).per_token_shapes == ((1, 16), (1, 16))  # each rank caches its head


def test_deepseek_shards_put_back_together_are_the_unsharded_dummy_weights():
    full, ranks = _shards("tiny", V3)
    f, r = _params(full), [_params(m) for m in ranks]
    cat0 = lambda name: torch.cat([p[name] for p in r], dim=0)  # noqa: E731
    cat1 = lambda name: torch.cat([p[name] for p in r], dim=1)  # noqa: E731
    a = "model.layers.1.self_attn"
    for name in ("q_b_proj.weight", "kv_b_proj.weight"):  # per-head rows
        assert torch.equal(cat0(f"{a}.{name}"), f[f"{a}.{name}"])
    assert torch.equal(cat1(f"{a}.o_proj.weight"), f[f"{a}.o_proj.weight"])
    for name in ("q_a_proj.weight", "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight"):  # the latents: replicated
        assert torch.equal(r[0][f"{a}.{name}"], f[f"{a}.{name}"]) and torch.equal(r[1][f"{a}.{name}"], f[f"{a}.{name}"])
    absorbed = [m.model.layers[1].self_attn.w_uk for m in ranks]  # derived after loading from the local heads
    assert torch.equal(torch.cat(absorbed), full.model.layers[1].self_attn.w_uk)
    moe = "model.layers.1.mlp"
    assert torch.equal(cat0(f"{moe}.experts.w13"), f[f"{moe}.experts.w13"])  # experts 0-3 on rank 0, 4-7 on rank 1
    assert torch.equal(cat0(f"{moe}.experts.w2"), f[f"{moe}.experts.w2"])
    assert torch.equal(r[1][f"{moe}.gate.weight"], f[f"{moe}.gate.weight"])  # the router: replicated
    assert torch.equal(cat1(f"{moe}.shared_experts.down_proj.weight"), f[f"{moe}.shared_experts.down_proj.weight"])
    assert torch.equal(cat1("model.layers.0.mlp.down_proj.weight"), f["model.layers.0.mlp.down_proj.weight"])
    assert ranks[1].kv_cache_spec(torch.float32) == full.kv_cache_spec(torch.float32)  # the whole latent row


def test_a_row_parallel_bias_is_held_by_rank_zero_only():
    overrides = dict(QWEN, mlp_bias=True)
    full, ranks = _shards("r1-distill-qwen-1.5b", overrides)
    name = "model.layers.0.mlp.down_proj.bias"
    assert torch.equal(_params(ranks[0])[name], _params(full)[name])
    assert ranks[1].model.layers[0].mlp.down_proj.bias is None  # the all-reduce adds rank 0's once
    gate_bias = "model.layers.0.mlp.gate_up_proj.bias"
    assert torch.equal(_params(ranks[1])[gate_bias][:48], _params(full)[gate_bias][48:96])


def test_lab_serve_passes_the_size_on_and_refuses_what_tensor_parallelism_cannot_do_yet():
    import argparse
    import hashlib

    from lab.server.cli import ENGINE_FLAGS, register
    from tests.server.conftest import free_port
    from tests.server.test_cli import run_serve

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for flag in ("--tensor-parallel-size", "-tp"):
        args = parser.parse_args(["serve", flag, "2"])
        given = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name) is not None}
        assert given == {"model": "tiny", "tensor_parallel_size": 2}
    admin = "sha256:" + hashlib.sha256(b"sk-admin").hexdigest()
    result = run_serve("--tensor-parallel-size", "2", "--admin-key-hash", admin, "--port", str(free_port()))
    assert result.returncode == 2 and "--tensor-parallel-size > 1 cannot be combined" in result.stderr, result.stderr
