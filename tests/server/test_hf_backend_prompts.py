"""The baseline refuses the prompts the engine refuses, with the engine's words, before a batch
forms (one shared function, `lab.engine.prompt_checks`), and streams each token as it is made."""
from __future__ import annotations

import asyncio
import threading

import pytest

from lab.engine.prompt_checks import check_prompt_ids
from lab.engine.sampling_params import SamplingParams
from lab.server.backend import RequestRefused
from lab.server.hf_backend import HFBackend
from tests.server.test_hf_fcfs import EOS, FakeTokenizer

VOCAB, CONTEXT = 1000, 8


def refusal(prompt_ids: list[int]) -> str | None:
    try:
        check_prompt_ids(prompt_ids, VOCAB, CONTEXT)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("prompt_ids,expected", [
    ([], "prompt is empty"),
    ([1] * CONTEXT, f"prompt has {CONTEXT} tokens but the model's context (max_model_len) is {CONTEXT}"),
    ([5, VOCAB, -1], f"prompt token ids [{VOCAB}, -1] are outside the model's vocabulary [0, {VOCAB})"),
    ([1, 2, 3], None),
    ([VOCAB - 1] * (CONTEXT - 1), None),
])
def test_the_shared_check_names_the_problem(prompt_ids, expected):
    got = refusal(prompt_ids)
    assert (got is None) if expected is None else (expected in got)


class GatedRunner:
    """Emits one token per row, then holds the batch until the test opens the gate."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()

    def __call__(self, requests) -> None:
        self.batches.append([r.request_id for r in requests])
        for step in range(max(r.params.max_tokens for r in requests)):
            for r in requests:
                r.on_token(100 + step, EOS, max_model_len=CONTEXT * 8)
            if step == 0:
                assert self.gate.wait(10)


def backend() -> tuple[HFBackend, GatedRunner]:
    runner = GatedRunner()
    return HFBackend(runner, FakeTokenizer(), "m", max_model_len=CONTEXT, vocab_size=VOCAB, batch_size=2), runner


def test_a_prompt_without_room_for_output_is_refused_and_never_joins_a_batch():
    hf, runner = backend()
    runner.gate.set()

    async def scenario() -> None:
        await anext(hf.generate([1] * CONTEXT, SamplingParams(max_tokens=2), "long"))

    try:
        with pytest.raises(RequestRefused, match="must leave room for at least one output token"):
            asyncio.run(scenario())
    finally:
        hf.shutdown()
    assert runner.batches == []


def test_the_first_token_reaches_the_client_while_its_batch_is_still_running():
    hf, runner = backend()

    async def scenario() -> tuple[bool, list]:
        stream = hf.generate([1, 2], SamplingParams(temperature=0.0, max_tokens=3), "a")
        first = await asyncio.wait_for(anext(stream), timeout=10)  # the runner is blocked after token 1
        still_running = not runner.gate.is_set() and hf.stats().num_requests_running == 1
        runner.gate.set()
        return still_running, [first, *[d async for d in stream]]

    try:
        still_running, deltas = asyncio.run(scenario())
    finally:
        hf.shutdown()
    assert still_running
    assert [d.token_ids for d in deltas] == [(100,), (101,), (102,)]
