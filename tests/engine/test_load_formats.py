"""Load formats (auto, cpu, overlap) give the same bits; the overlapped reader's chunks, dtypes and failures.

On a CPU the "cpu" and "overlap" paths degrade to host copies (no pinned memory, no streams), but the
reader thread, the chunking and the buffer ring run exactly as on a GPU.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lab.engine.args import EngineArgs
from lab.engine.checkpoint_writer import write_checkpoint
from lab.engine.loader import LOAD_FORMATS, checkpoint_files, iter_checkpoint, load_model
from lab.engine.safetensors_stream import iter_overlapped, read_header
from lab.engine.startup import StartupPhases

SMALL_TINY = {"vocab_size": 1024, "num_hidden_layers": 2}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The tiny preset as a float32 checkpoint in several shards."""
    return write_checkpoint("tiny", tmp_path_factory.mktemp("ck") / "tiny", seed=5, dtype=torch.float32,
                            hf_overrides=SMALL_TINY, max_shard_bytes=2_000_000)


def _reference(checkpoint: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(checkpoint):
        tensors.update(load_file(path))
    return tensors


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


@pytest.mark.parametrize("load_format", LOAD_FORMATS)
def test_every_format_reads_every_tensor_bit_for_bit(sharded: Path, load_format: str) -> None:
    assert len(checkpoint_files(sharded)) > 1
    _assert_same(dict(iter_checkpoint(sharded, CPU, load_format=load_format)), _reference(sharded))


def test_models_loaded_through_each_format_are_equal(sharded: Path) -> None:
    models = {fmt: dict(load_model(str(sharded), torch.float32, "cpu", load_format=fmt).module.named_parameters())
              for fmt in LOAD_FORMATS}
    for fmt in LOAD_FORMATS[1:]:
        _assert_same(models[fmt], models[LOAD_FORMATS[0]])


def test_overlapped_reader_in_small_chunks_keeps_every_dtype_and_shape(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(97, 31, generator=gen),  # 12 028 bytes: 13 chunks of 1000
        "bf16": torch.randn(5, 7, generator=gen).to(torch.bfloat16),
        "half": torch.randn(3, generator=gen).half(),
        "ids": torch.arange(-5, 6, dtype=torch.int64),
        "small_ints": torch.tensor([1, -2, 3], dtype=torch.int8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, tmp_path / "a.safetensors")
    save_file({"second_file": torch.ones(2, 2)}, tmp_path / "b.safetensors")
    files = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    got = dict(iter_overlapped(files, CPU, chunk_bytes=1000, num_buffers=2))
    _assert_same(got, {**tensors, "second_file": torch.ones(2, 2)})
    starts = [e.start for e in read_header(files[0])]
    assert starts == sorted(starts)  # read in the order of the bytes on disk: one forward pass over the file


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    save_file({"w": torch.randn(64, 64)}, tmp_path / "t.safetensors")
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="t.safetensors ends before"):
        list(iter_overlapped([tmp_path / "t.safetensors"], CPU, chunk_bytes=4096))


def test_stopping_early_stops_the_reader_thread(sharded: Path) -> None:
    stream = iter_overlapped(checkpoint_files(sharded), CPU, chunk_bytes=4096, num_buffers=2)
    next(stream)
    stream.close()
    assert not any(t.name == "checkpoint-reader" for t in threading.enumerate())


def test_an_unknown_load_format_is_refused_by_name(sharded: Path) -> None:
    with pytest.raises(ValueError, match="load_format must be one of .*'mmap'"):
        load_model(str(sharded), torch.float32, "cpu", load_format="mmap")
    with pytest.raises(ValueError, match="load_format must be one of"):
        EngineArgs(load_format="fast")
    assert EngineArgs().load_format == "auto"  # today's path stays the default


def test_loading_a_checkpoint_books_read_and_transfer_apart(sharded: Path) -> None:
    phases = StartupPhases()
    load_model(str(sharded), torch.float32, "cpu", load_format="overlap", phases=phases)
    seconds = phases.as_dict()
    assert list(seconds) == ["config", "model_build", "weight_read", "weight_transfer", "weight_postprocess"]
    assert all(s >= 0 for s in seconds.values()) and seconds["weight_read"] > 0


def test_a_preset_books_its_dummy_weights_as_weight_init() -> None:
    phases = StartupPhases()
    load_model("tiny", torch.float32, "cpu", hf_overrides=SMALL_TINY, load_format="overlap", phases=phases)
    assert list(phases.as_dict()) == ["config", "model_build", "weight_init", "weight_postprocess"]
