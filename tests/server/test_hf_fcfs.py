"""`HFBackend` queueing, with a fake `run_batch` (no torch): FCFS static batches, aborts, gauges.

The fake records each batch's request ids and, for each request, emits `max_tokens` tokens
through the real `HFRequest.on_token` (so stop rules and deltas are the real ones). A gate lets
the test hold the first batch while more requests queue behind it.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from lab.engine.sampling_params import SamplingParams
from lab.server.backend import RequestRefused
from lab.server.hf_backend import HFBackend
from tests.server.conftest import ROOT

EOS = 1


class FakeTokenizer:
    eos_token_id = EOS

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


class FakeRunner:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()  # the first batch waits for it
        self.started = threading.Event()

    def __call__(self, requests) -> None:
        self.batches.append([r.request_id for r in requests])
        if len(self.batches) == 1:
            self.started.set()
            assert self.gate.wait(10)
        for step in range(max(r.params.max_tokens for r in requests)):
            for r in requests:
                r.on_token(100 + step, EOS, max_model_len=64)


def make_backend(batch_size: int) -> tuple[HFBackend, FakeRunner]:
    runner = FakeRunner()
    return HFBackend(runner, FakeTokenizer(), "m", max_model_len=64, vocab_size=1000, batch_size=batch_size), runner


async def collect(backend: HFBackend, request_id: str, max_tokens: int = 3, priority: int = 0) -> list:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return [d async for d in backend.generate([5, 6, 7], params, request_id, priority)]


def test_static_batches_run_in_arrival_order_and_priority_is_ignored():
    backend, runner = make_backend(batch_size=2)

    async def scenario() -> list[list]:
        first = asyncio.create_task(collect(backend, "a"))
        await asyncio.to_thread(runner.started.wait, 10)  # "a" runs alone: nothing else was waiting
        later = []
        for rid, priority in (("b", 3), ("c", 0), ("d", -5), ("e", 1)):  # priorities must not reorder
            later.append(asyncio.create_task(collect(backend, rid, priority=priority)))
            await asyncio.sleep(0.01)
        stats = backend.stats()
        runner.gate.set()
        return [stats, *(await asyncio.gather(first, *later))]

    try:
        stats, *streams = asyncio.run(scenario())
    finally:
        backend.shutdown()
    assert runner.batches == [["a"], ["b", "c"], ["d", "e"]]
    assert (stats.num_requests_running, stats.num_requests_waiting, stats.kv_cache_usage) == (1, 4, 0.0)
    for deltas in streams:
        assert [d.token_ids for d in deltas] == [(100,), (101,), (102,)]
        assert [d.finish_reason for d in deltas] == [None, None, "length"]
        assert "".join(d.text for d in deltas) == "<100><101><102>"
    assert backend.stats().num_requests_waiting == 0


def test_abort_of_a_queued_request_ends_its_stream_and_it_never_runs():
    backend, runner = make_backend(batch_size=1)

    async def scenario() -> tuple[list, list]:
        first = asyncio.create_task(collect(backend, "a"))
        await asyncio.to_thread(runner.started.wait, 10)
        queued = asyncio.create_task(collect(backend, "b"))
        await asyncio.sleep(0.05)
        backend.abort("b")
        aborted = await queued
        runner.gate.set()
        return aborted, await first

    try:
        aborted, finished = asyncio.run(scenario())
    finally:
        backend.shutdown()
    assert [d.finish_reason for d in aborted] == ["abort"] and aborted[0].num_output_tokens == 0
    assert finished[-1].finish_reason == "length"
    assert runner.batches == [["a"]]


def test_prompt_outside_the_vocabulary_is_refused_before_any_delta():
    backend, _ = make_backend(batch_size=1)

    async def scenario() -> None:
        stream = backend.generate([5, 5000], SamplingParams(max_tokens=2), "x")
        await anext(stream)

    try:
        with pytest.raises(RequestRefused, match="outside the model's vocabulary"):
            asyncio.run(scenario())
    finally:
        backend.shutdown()


def test_eos_ends_a_request_unless_ignore_eos():
    def eos_second(requests) -> None:  # a runner whose model samples EOS as the second token
        for token in (100, EOS, 102, 103):
            for r in requests:
                r.on_token(token, EOS, max_model_len=64)

    backend = HFBackend(eos_second, FakeTokenizer(), "m", max_model_len=64, vocab_size=1000, batch_size=2)

    async def scenario() -> tuple[list, list]:
        stops = collect(backend, "stops", max_tokens=4)
        params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
        goes_on = [d async for d in backend.generate([5], params, "goes-on")]
        return await stops, goes_on

    try:
        stops, goes_on = asyncio.run(scenario())
    finally:
        backend.shutdown()
    assert stops[-1].finish_reason == "stop" and stops[-1].num_output_tokens == 2
    assert goes_on[-1].finish_reason == "length" and goes_on[-1].num_output_tokens == 4


def test_the_server_and_the_hf_backend_import_without_torch():
    code = ("import sys\nimport lab.server.cli, lab.server.runner, lab.server.app, lab.server.hf_backend\n"
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\nassert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
