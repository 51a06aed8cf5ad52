"""DeepSeek's block-FP8 weights: the arithmetic, FP8 checkpoints on disk, and `quantization="fp8"`.

The error bound the round trip is held to, derived once. e4m3fn has 3 mantissa bits, exponent bias 7, so
its normal numbers run from 2^-6 up to 448 = 1.75 * 2^8 and its subnormals are multiples of 2^-9. A tile is
scaled by s = amax / 448 into [-448, 448]; rounding to nearest moves a normal x = w / s by at most half an
ulp, 2^-4 * 2^floor(log2 |x|) <= 2^-4 * |x|, and a subnormal one by at most 2^-10. Dequantizing multiplies
by s again (float32, relative error 2^-24), so every element obeys
    |dequant(w) - w| <= max(2^-4 * |w|, 2^-10 * s) (+ float32 slack).
The oracles: that bound; a per-tile scalar loop written from the format's definition; transformers' own
DeepSeek-V3 (loaded from the dequantized twin of an FP8 checkpoint); and the unquantized engine.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lab.engine import LLM, SamplingParams
from lab.engine.checkpoint_writer import write_checkpoint
from lab.engine.fp8 import (FP8_E4M3_MAX, SCALE_SUFFIX, dequantize_block_fp8, dequantize_stream,
                            fake_quantize_block_fp8_, is_block_fp8_weight, quantize_block_fp8)
from lab.engine.loader import load_model
from lab.engine.quant_config import BlockFP8Config
from lab.engine.weight_quant import dense_weights
from tests.engine.hf_fixtures import make_tiny_checkpoint
from tests.engine.test_generate import _hf_greedy, _prompts, _vocab

CPU = torch.device("cpu")
HALF_ULP = 2.0**-4  # e4m3: 3 mantissa bits, round to nearest
SUBNORMAL_HALF_STEP = 2.0**-10  # half of e4m3's subnormal spacing 2^-9
MAX_NEW = 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)


def _weight(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Normal values whose magnitude changes by decades across rows: each tile needs its own scale."""
    gen = torch.Generator().manual_seed(seed)
    rows = 10.0 ** torch.linspace(-3, 2, shape[0]).unsqueeze(1)
    return torch.randn(shape, generator=gen) * rows


def _bound(w: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    s = scale_inv.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: w.shape[0], : w.shape[1]]
    return torch.maximum(HALF_ULP * w.abs(), SUBNORMAL_HALF_STEP * s) * (1 + 1e-6) + 1e-7 * w.abs()


# ---- the arithmetic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,block", [((256, 384), (128, 128)), ((300, 200), (128, 128)),
                                         ((130, 260), (128, 128)), ((45, 70), (16, 32)), ((1, 5), (128, 128))])
def test_round_trip_stays_within_the_e4m3_bound(shape, block) -> None:
    w = _weight(shape)
    w_fp8, scale_inv = quantize_block_fp8(w, block)
    assert w_fp8.dtype == torch.float8_e4m3fn and w_fp8.shape == w.shape
    assert scale_inv.dtype == torch.float32
    assert tuple(scale_inv.shape) == (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))
    back = dequantize_block_fp8(w_fp8, scale_inv, block)
    err = (back - w).abs()
    assert (err <= _bound(w, scale_inv, block)).all(), float((err / _bound(w, scale_inv, block)).max())
    if w.numel() >= 1000:  # and tight: among many random weights one lands near a half-ulp rounding boundary
        assert float((err / (HALF_ULP * w.abs()).clamp_min(1e-30)).max()) > 0.9


def test_each_tile_uses_e4m3s_full_range_and_edge_tiles_are_scaled_by_their_own_crop() -> None:
    w = _weight((130, 260))
    w_fp8, scale_inv = quantize_block_fp8(w)
    for r in range(2):
        for c in range(3):
            tile = w[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128]  # the ragged ones are crops: 2 rows, 4 cols
            torch.testing.assert_close(scale_inv[r, c], tile.abs().max() / FP8_E4M3_MAX, rtol=1e-6, atol=0)
            q = w_fp8[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128].float()
            assert float(q.abs().max()) == FP8_E4M3_MAX  # the tile's largest element maps to 448


def test_dequantize_matches_a_scalar_loop_over_tiles() -> None:
    """dequantized[i, j] = fp8[i, j] * scale_inv[i // b0, j // b1], written out element by element."""
    block = (16, 32)
    w_fp8, scale_inv = quantize_block_fp8(_weight((45, 70), seed=3), block)
    ours = dequantize_block_fp8(w_fp8, scale_inv, block)
    q = w_fp8.float().tolist()
    s = scale_inv.tolist()
    for i in range(45):
        for j in range(70):
            assert ours[i, j].item() == torch.tensor(q[i][j] * s[i // 16][j // 32], dtype=torch.float32).item()


def test_zero_tiles_quantize_to_zeros_with_a_finite_scale() -> None:
    w = torch.zeros(200, 130)
    w[150:, :] = 1.0  # one row of tiles is nonzero
    w_fp8, scale_inv = quantize_block_fp8(w)
    assert torch.isfinite(scale_inv).all() and (scale_inv > 0).all()
    torch.testing.assert_close(dequantize_block_fp8(w_fp8, scale_inv), w, rtol=0, atol=0)


def test_dequantize_to_bfloat16_is_the_float32_product_rounded() -> None:
    w_fp8, scale_inv = quantize_block_fp8(_weight((130, 260)))
    f32 = dequantize_block_fp8(w_fp8, scale_inv)
    assert torch.equal(dequantize_block_fp8(w_fp8, scale_inv, dtype=torch.bfloat16), f32.bfloat16())


def test_bad_shapes_and_blocks_are_named() -> None:
    w_fp8, scale_inv = quantize_block_fp8(_weight((130, 260)))
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.up_proj.weight_scale_inv has shape \(1, 3\), "
                                         r"expected \(2, 3\)"):
        dequantize_block_fp8(w_fp8, scale_inv[:1], name="model.layers.0.mlp.up_proj.weight")
    with pytest.raises(ValueError, match="2-D"):
        quantize_block_fp8(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="two positive integers"):
        quantize_block_fp8(torch.zeros(4, 4), (0, 128))


def test_the_stream_pairs_weights_and_scales_in_either_order() -> None:
    a, sa = quantize_block_fp8(_weight((20, 30), 1), (8, 8))
    b, sb = quantize_block_fp8(_weight((20, 30), 2), (8, 8))
    norm = torch.ones(30)
    stream = [("x.a.weight", a), ("x.b.weight_scale_inv", sb), ("x.norm.weight", norm),
              ("x.a.weight_scale_inv", sa), ("x.b.weight", b)]
    out = dict(dequantize_stream(stream, (8, 8)))
    assert sorted(out) == ["x.a.weight", "x.b.weight", "x.norm.weight"]
    assert torch.equal(out["x.a.weight"], dequantize_block_fp8(a, sa, (8, 8)))
    assert torch.equal(out["x.b.weight"], dequantize_block_fp8(b, sb, (8, 8)))
    assert out["x.norm.weight"] is norm
    with pytest.raises(ValueError, match=r"without a _scale_inv tensor: \['x.a.weight'\]"):
        list(dequantize_stream([("x.a.weight", a)], (8, 8)))
    with pytest.raises(ValueError, match=r"without their fp8 weight: \['x.b.weight_scale_inv'\]"):
        list(dequantize_stream([("x.b.weight_scale_inv", sb)], (8, 8)))


def test_which_tensors_deepseek_stores_in_fp8() -> None:
    assert is_block_fp8_weight("model.layers.3.mlp.experts.7.gate_proj.weight", 2)
    assert is_block_fp8_weight("model.layers.0.self_attn.kv_b_proj.weight", 2)
    assert not is_block_fp8_weight("model.layers.3.mlp.gate.weight", 2)  # the router stays bf16
    assert not is_block_fp8_weight("model.layers.0.input_layernorm.weight", 1)
    assert not is_block_fp8_weight("model.embed_tokens.weight", 2)
    assert not is_block_fp8_weight("lm_head.weight", 2)


# ---- FP8 checkpoints on disk ------------------------------------------------------------------------
def _to_fp8_checkpoint(src: Path, fp8_dir: Path, twin_dir: Path, block: tuple[int, int]) -> None:
    """`src` converted to V3's FP8 format (in two shards: every scale before its weight, so the loader must
    pair across shards), and its twin: the same weights dequantized, saved as float32 without the config."""
    tensors = load_file(src / "model.safetensors")
    weights, scales, twin = {}, {}, {}
    for name, t in tensors.items():
        if is_block_fp8_weight(name, t.ndim):
            weights[name], scales[name + SCALE_SUFFIX] = quantize_block_fp8(t, block)
            twin[name] = dequantize_block_fp8(weights[name], scales[name + SCALE_SUFFIX], block)
        else:
            weights[name] = twin[name] = t
    config = json.loads((src / "config.json").read_text())
    for folder in (fp8_dir, twin_dir):
        folder.mkdir()
    (twin_dir / "config.json").write_text(json.dumps(config))
    save_file(twin, twin_dir / "model.safetensors", metadata={"format": "pt"})
    config["quantization_config"] = BlockFP8Config(block).to_hf_dict()
    (fp8_dir / "config.json").write_text(json.dumps(config))
    files = {"model-00001-of-00002.safetensors": scales, "model-00002-of-00002.safetensors": weights}
    for file, part in files.items():
        save_file(part, fp8_dir / file, metadata={"format": "pt"})
    weight_map = {n: file for file, part in files.items() for n in part}
    (fp8_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    src = make_tiny_checkpoint("deepseek_v3", root / "src")
    block = (16, 16)  # small tiles: several per tensor, ragged ones on kv_b_proj's 24 columns
    _to_fp8_checkpoint(src, root / "fp8", root / "twin", block)
    return src, root / "fp8", root / "twin"


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


def test_the_fp8_checkpoint_holds_what_deepseek_ships(fp8_checkpoint) -> None:
    _, fp8_dir, _ = fp8_checkpoint
    kinds = {}
    for file in sorted(fp8_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            kinds.update((n, f.get_slice(n).get_dtype()) for n in f.keys())
    assert kinds["model.layers.1.mlp.experts.3.down_proj.weight"] == "F8_E4M3"
    assert kinds["model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"] == "F32"
    assert kinds["model.layers.1.mlp.gate.weight"] == kinds["model.embed_tokens.weight"] == "F32"
    assert "model.embed_tokens.weight_scale_inv" not in kinds


@pytest.mark.parametrize("load_format", ["auto", "cpu", "overlap"])
def test_an_fp8_checkpoint_loads_equal_to_its_dequantized_twin(fp8_checkpoint, load_format) -> None:
    """Stored in fp8 (the file's bytes, kept), computing with exactly the twin's numbers once dequantized."""
    _, fp8_dir, twin_dir = fp8_checkpoint
    fp8 = load_model(fp8_dir, torch.float32, CPU, load_format=load_format)
    twin = load_model(twin_dir, torch.float32, CPU)
    assert fp8.quantization == BlockFP8Config((16, 16)) and twin.quantization is None
    assert fp8.config == twin.config  # the storage format is not the architecture (hot reload compares these)
    ours, ref = dense_weights(fp8.module), dense_weights(twin.module)
    assert ours.keys() == ref.keys()
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name
    stored = _params(fp8.module)["model.layers.2.self_attn.o_proj.weight"]
    with safe_open(str(fp8_dir / "model-00002-of-00002.safetensors"), "pt") as f:
        on_disk = f.get_tensor("model.layers.2.self_attn.o_proj.weight")
    assert stored.dtype == torch.float8_e4m3fn and torch.equal(stored.view(torch.uint8), on_disk.view(torch.uint8))


def test_an_fp8_checkpoint_generates_the_twins_tokens_and_transformers_agrees(fp8_checkpoint) -> None:
    src, fp8_dir, twin_dir = fp8_checkpoint
    prompts = _prompts(_vocab(src))
    args = dict(dtype="float32", num_gpu_blocks=64, block_size=4)
    on_fp8 = [o.outputs[0].token_ids for o in LLM(str(fp8_dir), **args).generate(prompts, GREEDY)]
    on_twin = [o.outputs[0].token_ids for o in LLM(str(twin_dir), **args).generate(prompts, GREEDY)]
    assert on_fp8 == on_twin == _hf_greedy(twin_dir, prompts, MAX_NEW)


def test_a_malformed_scale_is_refused_by_name(fp8_checkpoint, tmp_path) -> None:
    _, fp8_dir, _ = fp8_checkpoint
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in fp8_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    scales_file = bad / "model-00001-of-00002.safetensors"
    scales = load_file(scales_file)
    name = "model.layers.2.self_attn.kv_b_proj.weight_scale_inv"
    scales[name] = scales[name][:, :1].contiguous()  # (7, 2) -> (7, 1): the ragged column of tiles is gone
    save_file(scales, scales_file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{name} has shape \(7, 1\), expected \(7, 2\)"):
        load_model(bad, torch.float32, CPU)


def test_a_hot_reload_swaps_a_bf16_checkpoint_for_its_fp8_twin(fp8_checkpoint) -> None:
    src, fp8_dir, twin_dir = fp8_checkpoint
    prompts = _prompts(_vocab(src))
    llm = LLM(str(src), dtype="float32", num_gpu_blocks=64, block_size=4)
    llm.update_weights(str(fp8_dir))
    on_reloaded = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    fresh = LLM(str(twin_dir), dtype="float32", num_gpu_blocks=64, block_size=4)
    assert on_reloaded == [o.outputs[0].token_ids for o in fresh.generate(prompts, GREEDY)]


# ---- the writer and quantization="fp8" --------------------------------------------------------------
SMALL = {"num_hidden_layers": 2, "vocab_size": 2048}  # a small embedding keeps these fast


def test_the_fp8_writer_equals_quantizing_the_preset_on_load(tmp_path) -> None:
    path = write_checkpoint("tiny", tmp_path / "tiny-fp8", dtype=torch.float32, hf_overrides=SMALL, fp8=True)
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                             "weight_block_size": [128, 128]}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.layers.1.mlp.experts.0.up_proj.weight").get_dtype() == "F8_E4M3"
        assert f.get_slice("model.layers.0.mlp.down_proj.weight_scale_inv").get_shape() == [2, 4]  # (256, 512)
        assert f.get_slice("lm_head.weight").get_dtype() == "F32"
    loaded = load_model(path, torch.float32, CPU)
    on_load = load_model("tiny", torch.float32, CPU, hf_overrides=SMALL, quantization="fp8")
    plain = load_model("tiny", torch.float32, CPU, hf_overrides=SMALL)
    assert loaded.quantization == on_load.quantization == BlockFP8Config() and plain.quantization is None
    ours, ref, unrounded = dense_weights(loaded.module), dense_weights(on_load.module), dense_weights(plain.module)
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name
    params, on_load_params = _params(loaded.module), _params(on_load.module)
    codes = "model.layers.0.mlp.gate_up_proj.weight"  # the same codes and scales, not only the same numbers
    assert torch.equal(params[codes].view(torch.uint8), on_load_params[codes].view(torch.uint8))
    scales = "model.layers.1.self_attn.q_b_proj.weight_scale_inv"
    assert torch.equal(params[scales], on_load_params[scales])
    assert not torch.equal(ours["model.layers.0.mlp.gate_up_proj.weight"],
                           unrounded["model.layers.0.mlp.gate_up_proj.weight"])
    assert torch.equal(ours["lm_head.weight"], unrounded["lm_head.weight"])  # kept as is


def test_fake_quantization_rounds_each_checkpoint_tensor_on_its_own_grid() -> None:
    """A fused gate_up parameter is two checkpoint tensors: each gets its own tiles (as the writer cuts them)."""
    loaded = load_model("tiny", torch.float32, CPU, hf_overrides=SMALL)
    params = _params(loaded.module)
    before = params["model.layers.0.mlp.gate_up_proj.weight"].clone()  # (gate 512 + up 512, 256)
    assert fake_quantize_block_fp8_(loaded.module) > 0
    after = params["model.layers.0.mlp.gate_up_proj.weight"]
    for rows in (slice(0, 512), slice(512, 1024)):
        assert torch.equal(after[rows], dequantize_block_fp8(*quantize_block_fp8(before[rows])))


def _first_step_logits(llm: LLM, prompts: list[list[int]]) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    original = llm.engine.model.compute_logits

    def capture(hidden):
        logits = original(hidden)
        captured.append(logits.clone())
        return logits

    llm.engine.model.compute_logits = capture
    llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True))
    return captured[0]  # one batched prefill step: one row per prompt


def test_quantization_fp8_on_a_preset_stays_close_to_the_unquantized_engine() -> None:
    rng = random.Random(0)
    prompts = [[rng.randrange(2, 1000) for _ in range(n)] for n in (5, 12, 3)]
    args = dict(dtype="float32", num_gpu_blocks=32, block_size=4, hf_overrides=SMALL)
    plain = _first_step_logits(LLM("tiny", **args), prompts)
    fp8 = _first_step_logits(LLM("tiny", quantization="fp8", **args), prompts)
    cosine = torch.nn.functional.cosine_similarity(fp8, plain, dim=-1)
    assert (cosine > 0.99).all(), cosine
    assert not torch.equal(fp8, plain)  # the rounding happened


def test_quantization_is_validated_by_name() -> None:
    from lab.engine.args import EngineArgs

    with pytest.raises(ValueError, match=r"quantization must be None or one of \('fp8', 'int8'\), got 'int4'"):
        EngineArgs(quantization="int4")
    with pytest.raises(ValueError, match="quantization must be"):
        load_model("tiny", torch.float32, CPU, quantization="awq")


def test_lab_serve_takes_quantization_and_refuses_it_with_the_hf_engine() -> None:
    from tests.server.test_cli import free_port, run_serve

    result = run_serve("--quantization", "int4", "--port", str(free_port()))
    assert result.returncode == 2 and "--quantization" in result.stderr and "'fp8'" in result.stderr
    result = run_serve("--engine", "hf", "--quantization", "fp8", "--port", str(free_port()))
    assert result.returncode == 2 and "--quantization" in result.stderr and "--engine hf" in result.stderr
