"""A poison request fails alone through both engine cores: the real core process and `AsyncLLM`'s thread.

The poison here slipped past validation the way only a hand-made object can: a `SamplingParams`
unpickled without running its checks (top_k past 64 bits, which makes the sampler raise when it
builds its tensors). The core process must report it as `RequestFailure(alone=True)` and finish
the greedy requests batched with it with the tokens they get without it; `AsyncLLM` must raise
`RequestFailedError` in the poison's stream only.
"""
from __future__ import annotations

import asyncio

import pytest

from lab.engine.args import EngineArgs
from lab.engine.async_engine import AsyncLLM
from lab.engine.core_client import EngineCoreClient
from lab.engine.core_messages import AddRequest
from lab.engine.outputs import RequestFailedError
from lab.engine.sampling_params import SamplingParams
from tests.engine.core_requests import poison, run_core

ARGS = EngineArgs(model="tiny", hf_overrides={"num_hidden_layers": 1}, max_model_len=128, num_gpu_blocks=64)
GOOD = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
PROMPTS = [[101, 202, 303], [7, 8, 9, 10, 11]]


@pytest.fixture(scope="module")
def thread_llm():
    llm = AsyncLLM.from_args(ARGS)
    yield llm
    llm.shutdown()


async def _tokens(llm: AsyncLLM, prompt: list[int], params: SamplingParams) -> list[int]:
    return [t async for out in llm.generate(prompt, params) for t in out.new_token_ids]


@pytest.fixture(scope="module")
def alone(thread_llm) -> list[list[int]]:
    return [asyncio.run(_tokens(thread_llm, p, GOOD)) for p in PROMPTS]


@pytest.fixture(scope="module")
def core():
    client = EngineCoreClient()
    client.start(ARGS)
    yield client
    client.shutdown()


def test_the_core_process_fails_the_poison_alone(core, alone):
    adds = [AddRequest(f"good-{i}", p, GOOD) for i, p in enumerate(PROMPTS)]
    adds.insert(1, AddRequest("poison", [5, 6, 7], poison()))  # crosses the pipe as pickles do: unchecked
    tokens, failures = run_core(core, adds)
    assert set(failures) == {"poison"}
    failed = failures["poison"]
    assert failed.alone and not failed.refused and "Overflow" in failed.message, failed
    assert [tokens[f"good-{i}"] for i in range(len(PROMPTS))] == alone
    assert all(len(t) == GOOD.max_tokens for t in alone)


def test_async_llm_raises_in_the_poison_stream_only(thread_llm, alone):
    async def main():
        return await asyncio.gather(*(_tokens(thread_llm, p, GOOD) for p in PROMPTS),
                                    _tokens(thread_llm, [5, 6, 7], poison()), return_exceptions=True)

    *good, failed = asyncio.run(main())
    assert isinstance(failed, RequestFailedError) and "Overflow" in str(failed)
    assert good == alone
    assert not thread_llm.engine.has_unfinished_requests() and thread_llm.engine.kv_cache_usage == 0
