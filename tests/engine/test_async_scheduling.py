"""Async scheduling (step N+1 launched before step N's tokens are seen) changes nothing observable.

The plain step loop is the oracle: with the same requests, the overlapped loop must give the
same tokens, text, finish reasons and stop reasons, stream deltas that add up to the final
output, leave every KV block free, and agree with transformers where the plain loop does.
"""
from __future__ import annotations

import random

import pytest

from lab.engine import LLM, SamplingParams
from lab.engine.sequence import PENDING_TOKEN_ID

SMALL = dict(hf_overrides={"num_hidden_layers": 1, "vocab_size": 4096}, max_model_len=256)


def _pair(**kwargs) -> tuple[LLM, LLM]:
    args = {**SMALL, **kwargs}
    return LLM("tiny", async_scheduling=False, **args), LLM("tiny", async_scheduling=True, **args)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, 4000) for _ in range(rng.randrange(2, 40))] for _ in range(n)]


def _summary(outs) -> list[tuple]:
    return [(o.token_ids, o.text, o.finish_reason, o.stop_reason) for o in outs]


def _mixed_params(n: int, seed: int = 1) -> list[SamplingParams]:
    rng = random.Random(seed)
    return [SamplingParams(temperature=0.0, max_tokens=rng.randrange(1, 24), ignore_eos=True) for _ in range(n)]


@pytest.fixture(scope="module")
def pair():
    return _pair(num_gpu_blocks=256, block_size=4)


def test_async_is_the_default_only_on_cuda(pair):
    plain, overlapped = pair
    assert not plain.engine.async_scheduling and overlapped.engine.async_scheduling
    default = LLM("tiny", **SMALL, num_gpu_blocks=64).engine
    assert default.async_scheduling == (default.device.type == "cuda")  # CPU: the plain loop by default


def test_same_tokens_with_mixed_lengths(pair):
    plain, overlapped = pair
    prompts, params = _prompts(12), _mixed_params(12)
    expected = plain.generate(prompts, params)
    got = overlapped.generate(prompts, params)
    assert _summary(got) == _summary(expected)
    assert [len(o.token_ids) for o in got] == [p.max_tokens for p in params]
    assert overlapped.engine.block_manager.num_free_blocks == 256
    assert not overlapped.engine.scheduler.has_unfinished()


def test_same_outputs_with_stop_strings_stop_ids_eos_and_min_tokens(pair):
    plain, overlapped = pair
    prompts = _prompts(6, seed=3)
    probe = plain.generate(prompts, SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True))
    stop_text = probe[0].text[5:8]  # a string the greedy text is known to contain
    stop_id = probe[1].token_ids[6]
    params = [
        SamplingParams(temperature=0.0, max_tokens=20, stop=(stop_text,)),
        SamplingParams(temperature=0.0, max_tokens=20, stop_token_ids=(stop_id,)),
        SamplingParams(temperature=0.0, max_tokens=20, stop_token_ids=(stop_id,), min_tokens=12),
        SamplingParams(temperature=0.0, max_tokens=20, stop=(stop_text,), skip_special_tokens=False),
        SamplingParams(temperature=0.0, max_tokens=20),  # EOS may end it
        SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True),
    ]
    expected = plain.generate(prompts, params)
    assert expected[0].finish_reason == "stop" and expected[0].stop_reason == stop_text
    assert expected[1].finish_reason == "stop" and expected[1].stop_reason == stop_id
    assert _summary(overlapped.generate(prompts, params)) == _summary(expected)


def test_same_tokens_when_seeded_sampling(pair):
    plain, overlapped = pair
    prompts = _prompts(5, seed=4)
    params = [SamplingParams(temperature=0.8, top_k=50, top_p=0.9, seed=10 + i, max_tokens=12) for i in range(5)]
    assert _summary(overlapped.generate(prompts, params)) == _summary(plain.generate(prompts, params))


def test_same_tokens_under_preemption_and_chunked_prefill():
    # 24 blocks of 4 tokens cannot hold eight requests at full length; an 8-token budget chunks prompts.
    plain, overlapped = _pair(num_gpu_blocks=24, block_size=4, max_num_batched_tokens=16, max_num_seqs=6)
    prompts = _prompts(8, seed=5)
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    expected = plain.generate(prompts, params)
    got = overlapped.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert sum(o.metrics.num_preemptions for o in got) > 0
    assert overlapped.engine.block_manager.num_free_blocks == 24


def test_streamed_deltas_add_up_and_hide_pending_tokens(pair):
    _, overlapped = pair
    engine = overlapped.engine
    params = SamplingParams(temperature=0.0, max_tokens=9, ignore_eos=True)
    for i, p in enumerate(_prompts(3, seed=6)):
        engine.add_request(f"s{i}", p, params)
    tokens: dict[str, list[int]] = {}
    text: dict[str, str] = {}
    final = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            assert PENDING_TOKEN_ID not in out.token_ids and PENDING_TOKEN_ID not in out.new_token_ids
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            text[out.request_id] = text.get(out.request_id, "") + out.new_text
            assert out.token_ids == tokens[out.request_id]
            if out.finished:
                final[out.request_id] = out
    assert {rid: o.token_ids for rid, o in final.items()} == tokens
    assert {rid: o.text for rid, o in final.items()} == text


def test_abort_while_a_step_is_in_flight(pair):
    plain, overlapped = pair
    prompts = _prompts(4, seed=7)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    expected = [o.token_ids for o in plain.generate(prompts, params)]
    engine = overlapped.engine
    for i, p in enumerate(prompts):
        engine.add_request(f"a{i}", p, params)
    for _ in range(5):
        engine.step()
    assert engine._in_flight is not None  # a launched step whose tokens are still pending
    aborted = engine.abort_request("a1")
    assert aborted.finished and aborted.finish_reason == "abort"
    assert PENDING_TOKEN_ID not in aborted.token_ids
    assert aborted.token_ids == expected[1][: len(aborted.token_ids)]
    final = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out.token_ids
    assert final == {"a0": expected[0], "a2": expected[2], "a3": expected[3]}
    assert engine.block_manager.num_free_blocks == 256


def test_expired_deadline_with_async(pair):
    _, overlapped = pair
    engine = overlapped.engine
    engine.add_request("late", _prompts(1)[0], SamplingParams(max_tokens=50, ignore_eos=True), deadline=0.0)
    outs = []
    while engine.has_unfinished_requests():
        outs += engine.step()
    assert outs[-1].finish_reason == "deadline" and outs[-1].finished
    assert engine.block_manager.num_free_blocks == 256


def test_async_matches_transformers_under_preemption(tmp_path):
    from tests.engine.hf_fixtures import make_tiny_checkpoint
    from tests.engine.test_generate import GREEDY, _hf_greedy, _prompts as hf_prompts, _vocab

    path = make_tiny_checkpoint("qwen2", tmp_path / "qwen2")
    prompts = hf_prompts(_vocab(path))
    expected = _hf_greedy(path, prompts, GREEDY.max_tokens)
    llm = LLM(str(path), dtype="float32", num_gpu_blocks=14, block_size=4, max_num_batched_tokens=64, async_scheduling=True)
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == expected
    assert sum(o.metrics.num_preemptions for o in outs) > 0
