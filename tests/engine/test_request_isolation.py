"""One poison request fails alone: the rest of its batch finishes with the tokens it would have had.

Admission refuses every value the sampler cannot represent (`SamplingParams`, `check_sampling_ids`);
these tests check that refusal, then the defence behind it: a request whose params are corrupted
*after* admission (what a validation gap would let in: a stop token id past the vocabulary, banned
below `min_tokens` by indexing the logits, which raises inside the step) joins a batch of good
greedy requests. The good ones must end exactly as they do without it (the oracle: the same engine
running them alone), the poison one must end with an error naming the failure, and the KV cache
must be empty afterwards. Both step loops: the plain one and async scheduling.
"""
from __future__ import annotations

import pytest

from lab.engine import LLM, SamplingParams
from lab.engine.sampling_params import InvalidParam

SMALL = dict(hf_overrides={"num_hidden_layers": 1, "vocab_size": 4096}, max_model_len=256, num_gpu_blocks=128,
             block_size=4)
GOOD_PROMPTS = [[101, 202, 303, 404], [7, 8, 9], [1000, 1001, 1002, 1003, 1004, 1005]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "async"])
def llm(request):
    return LLM("tiny", async_scheduling=request.param, **SMALL)


def _run(engine, started: dict[str, list[int]], poison_after_steps: int | None) -> dict:
    """Add `started` (id -> prompt), step; after `poison_after_steps` steps add the poison. Final outputs by id."""
    for rid, prompt in started.items():
        engine.add_request(rid, prompt, GREEDY)
    finals, steps = {}, 0
    while engine.has_unfinished_requests():
        if steps == poison_after_steps:
            params = SamplingParams(temperature=0.0, max_tokens=8, min_tokens=4)
            engine.add_request("poison", [11, 12, 13], params)
            object.__setattr__(params, "stop_token_ids", (10**9,))  # past admission: indexes past the logits
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
        steps += 1
    return finals


def _good(llm_prefix: str) -> dict[str, list[int]]:
    return {f"{llm_prefix}-{i}": prompt for i, prompt in enumerate(GOOD_PROMPTS)}


@pytest.mark.parametrize("poison_after_steps", [0, 2], ids=["joins-at-prefill", "joins-mid-decode"])
def test_the_batch_finishes_with_the_tokens_it_has_without_the_poison(llm, poison_after_steps):
    reference = _run(llm.engine, _good(f"ref{poison_after_steps}"), poison_after_steps=None)
    finals = _run(llm.engine, _good(f"with{poison_after_steps}"), poison_after_steps)
    for i in range(len(GOOD_PROMPTS)):
        good, ref = finals[f"with{poison_after_steps}-{i}"], reference[f"ref{poison_after_steps}-{i}"]
        assert good.error is None and good.finish_reason == "length"
        assert good.token_ids == ref.token_ids and len(good.token_ids) == GREEDY.max_tokens


@pytest.mark.parametrize("poison_after_steps", [0, 2], ids=["joins-at-prefill", "joins-mid-decode"])
def test_the_poison_request_ends_alone_with_an_error_and_frees_its_kv(llm, poison_after_steps):
    finals = _run(llm.engine, _good(f"p{poison_after_steps}"), poison_after_steps)
    poison = finals["poison"]
    assert poison.finished and poison.finish_reason == "abort"
    assert poison.error is not None and "IndexError" in poison.error
    assert llm.engine.kv_cache_usage == 0 and not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize(("fields", "param"), [
    (dict(stop_token_ids=(4096,), min_tokens=2), "stop_token_ids"),  # one past the vocabulary
    (dict(seed=2**64), "seed"),
    (dict(top_k=2**70), "top_k"),
])
def test_admission_refuses_what_a_step_could_not_represent(llm, fields, param):
    with pytest.raises(InvalidParam) as refused:
        llm.engine.add_request(f"bad-{param}", [1, 2, 3], SamplingParams(max_tokens=4, **fields))
    assert refused.value.param == param
    assert not llm.engine.has_unfinished_requests()
