"""`write_checkpoint`: a preset's dummy weights on disk load back equal to the preset, sharded like HF's."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lab.engine.checkpoint_writer import INDEX_FILE, main, write_checkpoint
from lab.engine.loader import checkpoint_files, load_model
from lab.engine.tokenizer_loading import load_tokenizer

SMALL = {  # presets at test size: tiny covers MLA and stacked experts, Qwen2 the fused qkv/gate_up with biases
    "tiny": {"vocab_size": 1024, "num_hidden_layers": 2},
    "r1-distill-qwen-1.5b": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2},
}


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


@pytest.mark.parametrize("preset", sorted(SMALL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_checkpoint_loads_back_equal_to_the_preset(tmp_path: Path, preset: str, dtype: torch.dtype) -> None:
    path = write_checkpoint(preset, tmp_path / "ck", seed=7, dtype=dtype, hf_overrides=SMALL[preset])
    from_disk = _params(load_model(str(path), dtype, "cpu").module)
    drawn = _params(load_model(preset, dtype, "cpu", seed=7, hf_overrides=SMALL[preset]).module)
    assert from_disk.keys() == drawn.keys()
    for name in drawn:
        assert from_disk[name].dtype == drawn[name].dtype and torch.equal(from_disk[name], drawn[name]), name
    other_seed = _params(load_model(preset, dtype, "cpu", seed=8, hf_overrides=SMALL[preset]).module)
    assert not all(torch.equal(from_disk[n], other_seed[n]) for n in drawn)


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    def digest(path: Path) -> list[str]:
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in checkpoint_files(path)]

    a = write_checkpoint("tiny", tmp_path / "a", seed=1, hf_overrides=SMALL["tiny"])
    b = write_checkpoint("tiny", tmp_path / "b", seed=1, hf_overrides=SMALL["tiny"])
    assert digest(a) == digest(b)


def test_shards_respect_the_size_limit_and_the_index_names_every_tensor(tmp_path: Path) -> None:
    limit = 1_500_000
    path = write_checkpoint("tiny", tmp_path / "ck", hf_overrides=SMALL["tiny"], max_shard_bytes=limit)
    index = json.loads((path / INDEX_FILE).read_text())
    files = checkpoint_files(path)
    assert len(files) > 2 and not (path / "model.safetensors").exists()
    assert files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
    seen = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            sizes = {name: f.get_slice(name).get_shape() for name in f.keys()}
            seen.update({name: file.name for name in f.keys()})
            nbytes = sum(f.get_tensor(n).nbytes for n in f.keys())
        assert nbytes <= limit or len(sizes) == 1  # a tensor over the limit gets a shard of its own
    assert index["weight_map"] == seen
    assert index["metadata"]["total_size"] == sum(
        t.nbytes for t in load_model(str(path), torch.bfloat16, "cpu").module.parameters())


def test_config_and_tokenizer_travel_with_the_weights(tmp_path: Path) -> None:
    tiny = write_checkpoint("tiny", tmp_path / "tiny", hf_overrides=SMALL["tiny"])
    config = json.loads((tiny / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["torch_dtype"] == "bfloat16"
    assert (tiny / "model.safetensors").is_file()  # one file under the limit: no index
    assert load_tokenizer(None, tiny).encode("hello world") == load_tokenizer(None, None).encode("hello world")
    qwen = write_checkpoint("r1-distill-qwen-1.5b", tmp_path / "qwen", hf_overrides=SMALL["r1-distill-qwen-1.5b"])
    assert not (qwen / "tokenizer.json").exists()  # the preset has none locally: the engine falls back


def test_bad_requests_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'gpt-5'.*tiny"):
        write_checkpoint("gpt-5", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        write_checkpoint("tiny", tmp_path / "taken")
    with pytest.raises(ValueError, match="max_shard_bytes"):
        write_checkpoint("tiny", tmp_path / "y", max_shard_bytes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written left behind


def test_command_line(tmp_path: Path, capsys) -> None:
    assert main(["tiny", str(tmp_path / "ck"), "--seed", "2", "--hf-overrides", json.dumps(SMALL["tiny"])]) == 0
    assert json.loads(capsys.readouterr().out) == {"checkpoint": str(tmp_path / "ck")}
    with pytest.raises(SystemExit):
        main(["tiny", str(tmp_path / "z"), "--hf-overrides", "[1]"])
    assert "must be a JSON object" in capsys.readouterr().err
