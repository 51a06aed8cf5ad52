"""`AsyncLLM`: streamed deltas add up to the offline result; a consumer that leaves aborts."""
from __future__ import annotations

import asyncio

import pytest

from lab.engine import LLM, SamplingParams
from lab.engine.args import EngineArgs
from lab.engine.async_engine import AsyncLLM


@pytest.fixture(scope="module")
def engine():
    eng = AsyncLLM.from_args(EngineArgs(model="tiny", num_gpu_blocks=128))
    yield eng
    eng.shutdown()


def test_stream_deltas_concatenate_to_offline_output(engine):
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)

    async def collect(prompt):
        items = [o async for o in engine.generate(prompt, params)]
        return items

    async def main():
        return await asyncio.gather(collect("Hello there"), collect("A longer prompt about GPUs"))

    results = asyncio.run(main())
    offline = LLM("tiny", num_gpu_blocks=64).generate(["Hello there", "A longer prompt about GPUs"], params)
    for items, ref in zip(results, offline):
        assert items[-1].finished and all(not o.finished for o in items[:-1])
        assert "".join(o.new_text for o in items) == ref.text
        assert sum((o.new_token_ids for o in items), []) == ref.token_ids


def test_refused_request_raises_before_streaming(engine):
    async def main():
        async for _ in engine.generate([], SamplingParams()):
            pass

    with pytest.raises(ValueError, match="empty"):
        asyncio.run(main())


def test_consumer_leaving_aborts_and_frees_blocks(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        async for out in engine.generate("Count to a thousand", params, request_id="leaver"):
            if len(out.token_ids) >= 3:
                break
        for _ in range(100):  # the abort is applied by the engine thread between steps
            if not engine.engine.has_unfinished_requests():
                return
            await asyncio.sleep(0.02)

    asyncio.run(main())
    assert not engine.engine.has_unfinished_requests()
    assert engine.engine.block_manager.num_free_blocks == engine.engine.num_blocks


def test_abort_ends_a_live_stream_with_finish_reason_abort(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        items = []
        async for out in engine.generate("Abort me", params, request_id="aborted"):
            items.append(out)
            if len(items) == 2:
                engine.abort("aborted")
        return items

    items = asyncio.run(main())
    assert items[-1].finished and items[-1].finish_reason == "abort"
    assert len(items[-1].token_ids) < 200
    assert engine.engine.block_manager.num_free_blocks == engine.engine.num_blocks


def test_consumer_cancelled_during_admission_aborts(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def consume():
        async for _ in engine.generate("Cancelled early", params, request_id="early"):
            pass

    async def main():
        task = asyncio.create_task(consume())
        await asyncio.sleep(0)  # the task submits its add and waits for the engine thread
        task.cancel()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not engine.engine.has_unfinished_requests():
                return

    asyncio.run(main())
    assert not engine.engine.has_unfinished_requests()
    assert engine.engine.block_manager.num_free_blocks == engine.engine.num_blocks


def test_dead_reason_is_none_while_the_loop_runs_and_says_why_after_shutdown():
    eng = AsyncLLM.from_args(EngineArgs(model="tiny", num_gpu_blocks=16, hf_overrides={"num_hidden_layers": 1}))
    assert eng.dead_reason is None
    eng.shutdown()
    assert eng.dead_reason == "the engine is shut down"
