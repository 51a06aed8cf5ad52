"""The corrupt checkpoints of the reload-corrupt drill are the real thing: each one the engine refuses by name
when offered as a hot reload, while the same checkpoint uncorrupted loads (so the refusal is the corruption's)."""
from __future__ import annotations

import pytest

from lab.chaos.reload_faults import new_checkpoint_dir, remove_checkpoint, write_corrupt_checkpoint
from lab.engine import LLM
from lab.engine.checkpoint_writer import write_checkpoint
from lab.engine.weight_standby import ReloadError
from lab.errors import LabError

OVERRIDES = {"num_hidden_layers": 2}


@pytest.fixture(scope="module")
def llm():
    return LLM("tiny", hf_overrides=OVERRIDES, num_gpu_blocks=16, block_size=16, dtype="float32")


@pytest.mark.parametrize("corruption, match", [
    ("nan", r"non-finite values \(NaN or inf\) in 1 tensor\(s\): \['model\.layers\.0\."),
    ("missing", r"model\.layers\.0\."),
    ("truncated", r"checkpoint|safetensors|header|incomplete"),
])
def test_each_corruption_is_refused_by_name(llm, tmp_path, corruption, match):
    record = write_corrupt_checkpoint(str(tmp_path / corruption), "tiny", '{"num_hidden_layers": 2}', corruption)
    assert record["corruption"] == corruption and record["backend"] == "disk"
    if corruption != "truncated":
        assert record["tensor"].startswith("model.layers.0.")
    with pytest.raises(ReloadError, match=match):
        llm.update_weights(record["path"])
    assert llm.engine.weights_version == "tiny@seed0"
    assert remove_checkpoint(record["path"])["removed"] and not remove_checkpoint(record["path"])["removed"]


def test_the_same_checkpoint_uncorrupted_loads(llm, tmp_path):
    path = write_checkpoint("tiny", tmp_path / "clean", seed=1, hf_overrides=OVERRIDES)
    assert llm.update_weights(str(path))["outcome"] == "switched"
    llm.update_weights("tiny", seed=0)  # back, for the other tests of the module


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(LabError, match="corruption must be one of"):
        write_corrupt_checkpoint(str(tmp_path / "x"), "tiny", None, "zeros")
    assert new_checkpoint_dir(str(tmp_path), "reload-corrupt") != new_checkpoint_dir(str(tmp_path / "y"), "other")
