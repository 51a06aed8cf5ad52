"""Loader, presets and ModelConfig: checkpoints (single, sharded, broken), dummy presets, KV sizing."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lab.engine.loader import load_model
from lab.engine.model_config import ModelConfig
from lab.engine.models import kv_cache_spec_for
from lab.engine.presets import DEEPSEEK_TOKENIZER_VOCAB_SIZE, PRESETS, get_preset, get_preset_info
from tests.engine.hf_fixtures import make_tiny_checkpoint

SMALL_TINY = {"vocab_size": 1024, "num_hidden_layers": 2}  # the tiny preset, cheaper to initialize


@pytest.fixture(scope="module")
def v3_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint("deepseek_v3", tmp_path_factory.mktemp("v3"))


def _copy_with(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint `src` whose tensors pass through `edit(dict) -> dict`."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(edit(load_file(src / "model.safetensors")), dst / "model.safetensors")
    return dst


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


# ---- checkpoints ----------------------------------------------------------------------------
def test_sharded_checkpoint_loads_like_single_file(v3_checkpoint: Path, tmp_path: Path) -> None:
    tensors = load_file(v3_checkpoint / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(v3_checkpoint / "config.json", sharded / "config.json")
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, sharded / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    single = _params(load_model(str(v3_checkpoint), torch.float32, "cpu").module)
    split = _params(load_model(str(sharded), torch.float32, "cpu").module)
    assert single.keys() == split.keys()
    for name in single:
        assert torch.equal(single[name], split[name]), name


def test_missing_tensor_is_named(v3_checkpoint: Path, tmp_path: Path) -> None:
    gone = "model.layers.1.mlp.experts.3.up_proj.weight"
    broken = _copy_with(v3_checkpoint, tmp_path / "c", lambda t: {k: v for k, v in t.items() if k != gone})
    with pytest.raises(ValueError, match="missing tensors") as err:
        load_model(str(broken), torch.float32, "cpu")
    assert gone in str(err.value)


def test_misshaped_tensor_is_named_with_both_shapes(v3_checkpoint: Path, tmp_path: Path) -> None:
    name = "model.layers.0.self_attn.kv_b_proj.weight"

    def edit(t):
        expected = tuple(t[name].shape)
        t[name] = torch.zeros(expected[0], expected[1] + 1)
        return t

    broken = _copy_with(v3_checkpoint, tmp_path / "c", edit)
    with pytest.raises(ValueError) as err:
        load_model(str(broken), torch.float32, "cpu")
    msg = str(err.value)
    assert name in msg and "(112, 25)" in msg and "(112, 24)" in msg


def test_unknown_tensor_errors_but_mtp_layer_is_skipped(v3_checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((v3_checkpoint / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1 and config["num_hidden_layers"] == 3
    mtp = _copy_with(v3_checkpoint, tmp_path / "mtp", lambda t: {**t, "model.layers.3.eh_proj.weight": torch.zeros(2, 2)})
    load_model(str(mtp), torch.float32, "cpu")  # layer 3 is the MTP layer: skipped
    stray = "model.layers.0.self_attn.extra.weight"
    odd = _copy_with(v3_checkpoint, tmp_path / "odd", lambda t: {**t, stray: torch.zeros(2)})
    with pytest.raises(ValueError, match="unexpected tensors") as err:
        load_model(str(odd), torch.float32, "cpu")
    assert stray in str(err.value)


def test_checkpoint_model_derives_absorbed_mla_weights(v3_checkpoint: Path) -> None:
    model = load_model(str(v3_checkpoint), torch.float32, "cpu").module
    attn = model.model.layers[0].self_attn
    w = attn.kv_b_proj.weight.view(attn.num_heads, -1, attn.kv_lora_rank)
    assert torch.equal(attn.w_uk, w[:, : attn.qk_nope_head_dim])
    assert not model.training


def test_unknown_model_names_presets_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_model(str(tmp_path / "nope"), torch.float32, "cpu")
    msg = str(err.value)
    assert all(name in msg for name in PRESETS) and "does not exist" in msg
    with pytest.raises(ValueError, match="valid presets: tiny"):
        get_preset("gpt-5")


# ---- presets: dummy weights -------------------------------------------------------------------
def test_dummy_weights_are_seeded() -> None:
    a = _params(load_model("tiny", torch.float32, "cpu", seed=0, hf_overrides=SMALL_TINY).module)
    b = _params(load_model("tiny", torch.float32, "cpu", seed=0, hf_overrides=SMALL_TINY).module)
    c = _params(load_model("tiny", torch.float32, "cpu", seed=1, hf_overrides=SMALL_TINY).module)
    assert all(torch.equal(a[n], b[n]) for n in a)
    matrices = [n for n in a if a[n].ndim >= 2]
    assert all(not torch.equal(a[n], c[n]) for n in matrices)
    assert a["model.norm.weight"].eq(1).all()
    assert a["model.embed_tokens.weight"].std().item() == pytest.approx(0.02, rel=0.05)


def test_preset_is_built_in_the_requested_dtype_with_float32_routers() -> None:
    loaded = load_model("tiny", torch.bfloat16, "cpu", hf_overrides=SMALL_TINY)
    assert loaded.preset == "tiny" and loaded.checkpoint_dir is None
    dtypes = {n: p.dtype for n, p in loaded.module.named_parameters()}
    assert dtypes["model.layers.1.mlp.gate.weight"] == torch.float32
    assert dtypes["model.layers.1.mlp.gate.e_score_correction_bias"] == torch.float32
    assert {d for n, d in dtypes.items() if ".gate." not in n} == {torch.bfloat16}


def test_hf_overrides_reach_the_config() -> None:
    loaded = load_model("tiny", torch.float32, "cpu", hf_overrides=SMALL_TINY)
    assert loaded.config.num_hidden_layers == 2 and len(loaded.module.model.layers) == 2
    assert loaded.module.compute_logits(torch.zeros(1, 256)).shape == (1, 1024)


# ---- presets: shapes and KV cache sizing ------------------------------------------------------
def test_presets_parse_with_their_real_shapes() -> None:
    cfgs = {name: ModelConfig.from_hf_dict(get_preset(name)) for name in PRESETS}
    q = cfgs["r1-distill-qwen-1.5b"]
    assert (q.hidden_size, q.num_hidden_layers, q.num_attention_heads, q.num_key_value_heads, q.head_dim) == (1536, 28, 12, 2, 128)
    assert (q.vocab_size, q.qkv_bias, q.tie_word_embeddings, q.max_model_len) == (151936, True, False, 131072)
    assert cfgs["r1-distill-qwen-7b"].vocab_size == 152064
    v3 = cfgs["deepseek-v3-layers"]
    assert [v3.is_moe_layer(i) for i in range(4)] == [False, False, False, True]
    assert ModelConfig.from_hf_dict({**get_preset("deepseek-v3-layers"), "num_hidden_layers": 6}).num_hidden_layers == 6
    lite = cfgs["deepseek-v2-lite"]
    assert lite.q_lora_rank is None and lite.rope_scaling.mscale_all_dim == 0.707 and lite.rope_interleave
    tiny = cfgs["tiny"]
    assert (tiny.vocab_size, tiny.eos_token_id, tiny.bos_token_id, tiny.rope_scaling) == (DEEPSEEK_TOKENIZER_VOCAB_SIZE, 1, 0, None)
    assert get_preset_info("tiny").tokenizer == "deepseek" and get_preset_info("r1-distill-qwen-1.5b").tokenizer is None


@pytest.mark.parametrize("preset", ["tiny", "deepseek-v2-lite", "deepseek-v3-layers"])
def test_mla_caches_a_fraction_of_expanded_kv(preset: str) -> None:
    cfg = ModelConfig.from_hf_dict(get_preset(preset))
    spec = kv_cache_spec_for(cfg, torch.bfloat16)
    latent = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    assert spec.bytes_per_token == cfg.num_hidden_layers * latent * 2
    expanded = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    if preset == "deepseek-v2-lite":
        assert latent == 512 + 64 and latent / expanded <= 1 / 8
    if preset == "tiny":
        assert latent == 64 + 16


def test_gqa_caches_k_and_v_of_kv_heads() -> None:
    spec = kv_cache_spec_for(ModelConfig.from_hf_dict(get_preset("r1-distill-qwen-1.5b")), torch.bfloat16)
    assert spec.per_token_shapes == ((2, 128), (2, 128))
    assert spec.bytes_per_token == 28 * 2 * 2 * 128 * 2


# ---- ModelConfig validation -------------------------------------------------------------------
def test_config_errors_name_the_field() -> None:
    base = get_preset("tiny")
    with pytest.raises(ValueError, match=r"supported model types: \['deepseek_v2', 'deepseek_v3', 'llama', 'qwen2'\]"):
        ModelConfig.from_hf_dict({**base, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        ModelConfig.from_hf_dict({**base, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        ModelConfig.from_hf_dict({**base, "num_experts_per_tok": 5})  # only 4 experts reachable in 1 of 2 groups
    with pytest.raises(ValueError, match="rope type 'dynamic'"):
        ModelConfig.from_hf_dict({**base, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}})
    with pytest.raises(ValueError, match="quant_method='awq'"):
        ModelConfig.from_hf_dict({**base, "quantization_config": {"quant_method": "awq"}})
    with pytest.raises(ValueError, match="no weight_block_size"):  # per-tensor fp8: only block fp8 loads
        ModelConfig.from_hf_dict({**base, "quantization_config": {"quant_method": "fp8"}})
    with pytest.raises(ValueError, match="'hidden_size'"):
        ModelConfig.from_hf_dict({k: v for k, v in base.items() if k != "hidden_size"})


def test_legacy_rope_scaling_parses_like_rope_parameters() -> None:
    modern = get_preset("deepseek-v2-lite")
    legacy = {k: v for k, v in modern.items() if k != "rope_parameters"}
    legacy["rope_theta"] = 10000
    legacy["rope_scaling"] = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
    assert ModelConfig.from_hf_dict(legacy) == ModelConfig.from_hf_dict(modern)


def test_dense_bias_flags() -> None:
    qwen = ModelConfig.from_hf_dict(get_preset("r1-distill-qwen-1.5b"))
    llama = ModelConfig.from_hf_dict({**get_preset("r1-distill-qwen-1.5b"), "model_type": "llama",
                                      "architectures": ["LlamaForCausalLM"], "attention_bias": True})
    assert (qwen.qkv_bias, qwen.o_proj_bias) == (True, False)  # Qwen2: q/k/v bias, never o_proj
    assert (llama.qkv_bias, llama.o_proj_bias) == (True, True)  # Llama attention_bias: all four
    assert math.isclose(qwen.rope_theta, 10000.0)
