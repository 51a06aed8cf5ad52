"""Bucket sizes of the CUDA graphs (CPU: pure functions), and that a CPU engine captures none."""
from __future__ import annotations

from lab.engine.cuda_graphs import MAX_MIXED_GRAPH_TOKENS, bucket_sizes, mixed_bucket_sizes


def test_decode_buckets_end_at_max_num_seqs() -> None:
    assert bucket_sizes(256)[:6] == [1, 2, 4, 8, 16, 32]
    assert bucket_sizes(256)[-1] == 256
    assert bucket_sizes(100)[-2:] == [96, 100]


def test_mixed_buckets_are_fine_where_serving_steps_live_and_capped() -> None:
    sizes = mixed_bucket_sizes(8192)
    assert sizes[:6] == [16, 32, 48, 64, 96, 128]
    assert all(b - a == 32 for a, b in zip(sizes[5:], sizes[6:18]))  # 128 .. 512 by 32
    assert sizes[-1] == MAX_MIXED_GRAPH_TOKENS
    assert mixed_bucket_sizes(300)[-2:] == [288, 300]  # the step budget itself is a bucket
    assert mixed_bucket_sizes(16) == [16]
    assert sizes == sorted(set(sizes))


def test_cpu_engine_has_no_graphs() -> None:
    from lab.engine import LLM

    engine = LLM("tiny", hf_overrides={"num_hidden_layers": 1}, num_gpu_blocks=16, max_model_len=64).engine
    assert engine.graphs is None and engine.mixed_graphs is None
