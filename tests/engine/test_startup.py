"""The engine's startup phases (`StartupPhases`, `LLMEngine.startup_phases`) and the startup knobs' validation."""
from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
import torch

from lab.engine.args import EngineArgs
from lab.engine.cuda_graphs import DecodeGraphs, bucket_sizes
from lab.engine.startup import StartupPhases


def test_phases_are_disjoint_ordered_and_add_up() -> None:
    synced = []
    phases = StartupPhases(sync=lambda: synced.append(1))
    with phases.phase("a"):
        time.sleep(0.02)
    with phases.phase("b") as b:
        for _ in b.carve("b_read", iter([1, 2])):
            time.sleep(0.01)  # the consumer's time: b's, not b_read's
    with phases.phase("a"):
        pass
    seconds = phases.as_dict()
    assert list(seconds) == ["a", "b_read", "b"]
    assert seconds["a"] >= 0.02 and seconds["b"] >= 0.02 and seconds["b_read"] < 0.01
    assert phases.total_s == pytest.approx(sum(seconds.values()))
    assert len(synced) == 6  # both ends of every phase: a phase owns the device work it queued


def test_a_phase_that_raises_still_counts_and_negative_time_is_refused() -> None:
    phases = StartupPhases()
    with pytest.raises(RuntimeError), phases.phase("broken"):
        raise RuntimeError("boom")
    assert "broken" in phases.as_dict()
    with pytest.raises(ValueError, match="negative"):
        phases.add("x", -1.0)


def test_engine_records_every_phase_of_its_constructor() -> None:
    from lab.engine import LLM

    start = time.perf_counter()
    engine = LLM("tiny", hf_overrides={"num_hidden_layers": 1}, num_gpu_blocks=16, max_model_len=64).engine
    wall = time.perf_counter() - start
    seconds = engine.startup_phases.as_dict()
    assert list(seconds) == ["device_init", "config", "model_build", "weight_init", "weight_postprocess", "tokenizer",
                             "kv_profile", "kv_allocation", "graph_capture"]
    assert all(s >= 0 for s in seconds.values())
    assert seconds["weight_init"] > 0 and seconds["tokenizer"] > 0
    assert engine.startup_phases.total_s <= wall


def test_cuda_graph_sizes_are_validated_and_off_by_default() -> None:
    assert EngineArgs().cuda_graph_sizes is None
    EngineArgs(cuda_graph_sizes=[1, 4, 256])
    with pytest.raises(ValueError, match=r"\[1, max_num_seqs=8\], got \[16\]"):
        EngineArgs(max_num_seqs=8, cuda_graph_sizes=[1, 16])
    for bad in ([], "1,2", [0], [2.0], [True]):
        with pytest.raises(ValueError, match="cuda_graph_sizes"):
            EngineArgs(cuda_graph_sizes=bad)


def test_decode_graph_buckets_follow_cuda_graph_sizes() -> None:
    def buckets(sizes):
        return DecodeGraphs(None, [], 16, 64, 128, torch.device("cpu"), sizes=sizes).buckets

    assert buckets(None) == bucket_sizes(64)  # today's buckets unless asked
    assert buckets([8, 1, 8, 32]) == [1, 8, 32]  # batches of 33..64 run eager


def test_another_recorder_sees_the_same_phase_boundaries() -> None:
    seen: list[tuple[str, str]] = []

    @contextmanager
    def also(name: str):
        seen.append(("enter", name))
        try:
            yield
        finally:
            seen.append(("exit", name))

    phases = StartupPhases(also=also)
    with phases.phase("load"):
        pass
    with pytest.raises(RuntimeError):
        with phases.phase("kv_allocation"):
            raise RuntimeError("oom")
    assert seen == [("enter", "load"), ("exit", "load"), ("enter", "kv_allocation"), ("exit", "kv_allocation")]
    assert set(phases.as_dict()) == {"load", "kv_allocation"}
