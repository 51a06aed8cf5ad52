"""Tensor parallelism end to end on CPU: two gloo processes serve the same model as one.

For tiny Hugging Face checkpoints of each family (tests/engine/hf_fixtures.py: Qwen2 with q/k/v bias, Llama
with a tied head and ONE KV head, so both ranks hold it, DeepSeek-V2 and V3 with MLA and MoE), TP=2 gives the
same greedy tokens as TP=1 and its prefill logits agree to float32 rounding (the row-parallel sums add in
another order, nothing else differs). The dummy weights of a preset, the chained inputs of async scheduling
and chunked prefill take the same road. A size the model cannot split fails before any process starts; the
benchmark counts the collectives a decode step must make. Every engine is shut down, leaving no worker behind.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist

from lab.engine import LLM, SamplingParams
from tests.engine.hf_fixtures import make_tiny_checkpoint

KINDS = ["qwen2", "llama", "deepseek_v2", "deepseek_v3"]
PROMPT_LENS = [3, 11, 7]
MAX_NEW = 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request, tmp_path_factory):
    return request.param, make_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def _prompts(vocab: int = 512, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, vocab) for _ in range(n)] for n in PROMPT_LENS]


def _generate(model: str, tp: int, **kwargs) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy tokens of `_prompts()` and the logits of the first sampled position (the prefill step's rows)."""
    llm = LLM(model, dtype="float32", num_gpu_blocks=64, block_size=4, tensor_parallel_size=tp, **kwargs)
    captured: list[torch.Tensor] = []
    try:
        original = llm.engine.model.compute_logits  # on rank 0 the gathered (N, vocab) logits

        def capture(hidden):
            logits = original(hidden)
            captured.append(logits.clone())
            return logits

        llm.engine.model.compute_logits = capture
        outs = llm.generate(_prompts(llm.engine.model_config.vocab_size), GREEDY)
    finally:
        workers = [] if llm.engine.parallel is None else llm.engine.parallel.workers
        llm.engine.shutdown()
    assert all(w.poll() is not None for w in workers) and not dist.is_initialized()  # nothing left behind
    return [o.token_ids for o in outs], captured[0]


def test_tp2_gives_the_tokens_and_logits_of_tp1(checkpoint):
    kind, path = checkpoint
    tokens1, logits1 = _generate(str(path), 1)
    tokens2, logits2 = _generate(str(path), 2)
    assert tokens2 == tokens1, kind
    assert logits2.shape == logits1.shape == (len(PROMPT_LENS), 512)
    torch.testing.assert_close(logits2, logits1, atol=1e-4, rtol=1e-4)
    assert len({t for seq in tokens1 for t in seq}) > MAX_NEW  # not a degenerate reference


def test_tp2_of_a_preset_is_the_same_dummy_model_under_async_scheduling_and_chunked_prefill():
    """Dummy weights drawn whole and sliced; async scheduling chains each decode input from the leader's device
    (the workers get it by broadcast); an 8-token budget mixes prefill chunks with decodes; the experts run as
    grouped GEMMs (what CUDA graphs use; the checkpoint tests above run the per-expert loop)."""
    overrides = dict(num_hidden_layers=3, vocab_size=512, first_k_dense_replace=1)
    kwargs = dict(hf_overrides=overrides, async_scheduling=True, max_num_batched_tokens=8, seed=1, moe_backend="grouped")
    tokens1, logits1 = _generate("tiny", 1, **kwargs)
    tokens2, logits2 = _generate("tiny", 2, **kwargs)
    assert tokens2 == tokens1
    torch.testing.assert_close(logits2, logits1, atol=1e-5, rtol=1e-5)


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from Linux /proc; None once it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        info = _state_and_parent(int(entry.name))
        if info is not None and info[1] == pid and info[0] != "Z":
            found.append(int(entry.name))
    return found


def test_the_engine_core_process_leads_a_tp2_group_and_a_poison_request_fails_alone():
    """`lab serve`'s road: the daemonic core process starts its worker; a request that fails in sampling (after
    the step's last collective) fails alone, the others keep TP=1's tokens; no worker outlives the core."""
    import time

    from lab.engine.args import EngineArgs
    from lab.engine.core_client import EngineCoreClient
    from lab.engine.core_messages import AddRequest
    from tests.engine.core_requests import poison, run_core

    overrides = {"num_hidden_layers": 2, "vocab_size": 512}
    prompts = _prompts()
    tp1 = LLM("tiny", hf_overrides=overrides, num_gpu_blocks=64)
    expected = [o.token_ids for o in tp1.generate(prompts, GREEDY)]
    adds = [AddRequest(f"good-{i}", p, GREEDY) for i, p in enumerate(prompts)]
    adds.append(AddRequest("poison", [5, 6], poison(max_tokens=4)))  # fails in sampling, after the collectives

    client = EngineCoreClient()
    client.start(EngineArgs(model="tiny", hf_overrides=overrides, num_gpu_blocks=64, tensor_parallel_size=2))
    workers = _children(client.pid)
    try:
        tokens, failures = run_core(client, adds)
    finally:
        client.shutdown()
    assert set(failures) == {"poison"} and failures["poison"].alone
    assert [tokens[f"good-{i}"] for i in range(len(prompts))] == expected
    assert len(workers) == 1  # the core's one worker (rank 1)
    deadline = time.monotonic() + 15
    while any((_state_and_parent(w) or ("Z", 0))[0] != "Z" for w in workers):
        assert time.monotonic() < deadline, "a tensor-parallel worker outlived its engine core"
        time.sleep(0.2)


def test_a_size_the_model_cannot_split_fails_before_any_worker_starts(tmp_path):
    path = make_tiny_checkpoint("qwen2", tmp_path / "qwen2")  # 4 heads
    with pytest.raises(ValueError, match="tensor_parallel_size=3 .* num_attention_heads=4"):
        LLM(str(path), dtype="float32", num_gpu_blocks=16, tensor_parallel_size=3)
    assert not dist.is_initialized()


def test_the_benchmark_times_decode_steps_and_counts_their_collectives(tmp_path):
    from lab.engine.parallel.bench import decode_step_times

    path = make_tiny_checkpoint("qwen2", tmp_path / "qwen2")  # 2 layers
    rows = decode_step_times(str(path), 2, [1, 3], steps=3, warmup=1, prompt_len=5, time_collectives=True,
                             dtype="float32", num_gpu_blocks=32, block_size=4)
    assert [r.batch_size for r in rows] == [1, 3]
    for r in rows:
        # a dense step: the embedding, then o_proj and down_proj of each layer, all-reduced; the logits gathered
        assert r.collectives_per_step == {"all_reduce": 1 + 2 * 2, "all_gather": 1}
        assert r.tokens_per_s == pytest.approx(r.batch_size / r.step_s)
        assert 0.0 < r.collective_share < 1.0 and not r.cuda_graphs
    assert not dist.is_initialized()
