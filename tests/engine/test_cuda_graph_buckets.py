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


def test_mixed_step_is_loaded_with_inert_padding() -> None:
    """What a replay reads: the step's rows, then padding that writes no cache and attends to nothing."""
    import torch

    from lab.engine.attention.metadata import AttentionMetadata
    from lab.engine.cuda_graphs import MixedGraphs

    graphs = MixedGraphs(None, [], block_size=16, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=128,
                         device=torch.device("cpu"))
    graphs.seq_lens.fill_(7)  # left over from a bigger step
    graphs.query_start_loc.fill_(9)
    # two sequences: a decode row (context 20) and a 17-token chunk over 3 cached tokens
    meta = AttentionMetadata(
        query_start_loc=[0, 1, 18], seq_lens=[21, 20], block_tables=[[5, 6], [2, 3]],
        slot_mapping=torch.arange(100, 118), block_size=16,
        block_tables_tensor=torch.tensor([[5, 6], [2, 3]], dtype=torch.int32),
        seq_lens_tensor=torch.tensor([21, 20], dtype=torch.int32),
        query_start_loc_tensor=torch.tensor([0, 1, 18], dtype=torch.int32),
        backend="triton", pure_decode=False,
    )
    ids, positions = torch.arange(1000, 1018), torch.arange(18)
    assert graphs.can_run(meta, 18) is False  # nothing captured (CPU): never replays
    bucket = graphs.load(ids, positions, meta)
    assert bucket == 32
    assert graphs.input_ids[:18].tolist() == ids.tolist()
    assert graphs.slot_mapping[:18].tolist() == list(range(100, 118))
    assert graphs.slot_mapping[18:32].tolist() == [-1] * 14  # padding tokens write no cache
    assert graphs.seq_lens.tolist() == [21, 20, 0, 0]  # padding sequences attend to nothing
    assert graphs.query_start_loc.tolist() == [0, 1, 18, 18, 18]  # ... over empty spans after the last
    assert graphs.block_tables[:2, :2].tolist() == [[5, 6], [2, 3]]


def test_a_twin_has_the_same_shape_over_another_module_and_buffers_of_its_own() -> None:
    """A hot reload's second graph set (`_StepGraphs.twin`): same buckets and KV cache, nothing live shared."""
    import torch

    from lab.engine.cuda_graphs import DecodeGraphs, MixedGraphs

    cache = [(torch.zeros(4, 16, 2),)]
    live = MixedGraphs("live", cache, block_size=16, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=128,
                       device=torch.device("cpu"))
    live.seq_lens.fill_(7)  # a live step's contents: the twin must start from its own cleared buffers
    live.run = lambda *args: "a test's counter"  # patched onto the live object: never the twin's
    twin = live.twin("standby")
    assert (twin.model, twin.kv_caches, twin.buckets, twin.max_num_seqs) == ("standby", cache, live.buckets, 4)
    buffers = ("input_ids", "positions", "slot_mapping", "block_tables", "seq_lens", "query_start_loc")
    for name in buffers:
        mine, theirs = getattr(twin, name), getattr(live, name)
        assert mine.data_ptr() != theirs.data_ptr() and mine.shape == theirs.shape and mine.dtype == theirs.dtype, name
    assert twin.seq_lens.tolist() == [0, 0, 0, 0] and twin.graphs == {} and twin.graphs is not live.graphs
    assert "run" not in vars(twin) and live.run() == "a test's counter"
    decode = DecodeGraphs("live", cache, 16, 8, 128, torch.device("cpu"), sizes=[1, 2, 4, 8]).twin("standby")
    assert decode.buckets == [1, 2, 4, 8] and decode.input_ids.shape == (8,) and decode.model == "standby"
