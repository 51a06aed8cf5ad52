"""The `LLM` API on the default `tiny` preset: sampling knobs, stops, bad input, metrics."""
from __future__ import annotations

import time

import pytest

from lab.engine import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm():
    return LLM("tiny", num_gpu_blocks=256)


def test_tiny_generates_text_quickly(llm):
    start = time.perf_counter()
    outs = llm.generate(["Hello, my name is", "The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    assert time.perf_counter() - start < 30
    for out in outs:
        assert out.finished
        assert 1 <= len(out.token_ids) <= 8
        assert out.text == llm.get_tokenizer().decode(out.token_ids) or out.finish_reason == "stop"
        m = out.metrics
        assert m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finished_time
        assert m.time_in_queue_s >= 0 and m.time_to_first_token_s > 0


def test_seeded_sampling_is_reproducible_and_batch_independent(llm):
    p = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=12, ignore_eos=True)
    alone = llm.generate(["Once upon a time"], p)[0].token_ids
    batched = llm.generate(["filler prompt", "Once upon a time", "another one"], [SamplingParams(temperature=1.0, max_tokens=5), p, SamplingParams(temperature=0.7, max_tokens=9)])
    assert batched[1].token_ids == alone
    other_seed = llm.generate(["Once upon a time"], SamplingParams(temperature=1.0, seed=99, max_tokens=12, ignore_eos=True))
    assert other_seed[0].token_ids != alone


def test_max_tokens_gives_length(llm):
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


def test_stop_token_id_ends_request(llm):
    free = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    stop_at = free.token_ids[2]
    first = free.token_ids.index(stop_at)
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, stop_token_ids=[stop_at]))[0]
    assert out.token_ids == free.token_ids[: first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_at


def test_stop_string_truncates_text(llm):
    free = llm.generate(["Tell me a story"], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    assert len(free.text) > 4
    stop = free.text[2:4]
    out = llm.generate(["Tell me a story"], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop]))[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free.text[: free.text.index(stop)]


def test_bad_inputs_name_the_problem_and_leave_engine_serving(llm):
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    too_long = [5] * llm.engine.max_model_len
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([[5, 6], too_long])
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([[10**9]])
    with pytest.raises(ValueError, match="prompt is empty"):
        llm.generate([""])
    assert not llm.engine.has_unfinished_requests()  # nothing half-queued
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=2))[0]
    assert out.finished


def test_unknown_model_names_presets():
    with pytest.raises(ValueError, match="tiny"):
        LLM("no-such-model-or-path")


def test_expired_deadline_finishes_with_reason(llm):
    engine = llm.engine
    engine.add_request("late", [5, 6, 7], SamplingParams(max_tokens=4), deadline=time.time() - 1)
    outs = engine.step()
    assert [(o.request_id, o.finish_reason) for o in outs] == [("late", "deadline")]
    assert not engine.has_unfinished_requests()


def test_chat_uses_template(llm):
    out = llm.chat([{"role": "user", "content": "Hi"}], SamplingParams(temperature=0, max_tokens=4))[0]
    tok = llm.get_tokenizer()
    assert tok.decode(out.prompt_token_ids, skip_special_tokens=False).endswith("<｜Assistant｜>")
