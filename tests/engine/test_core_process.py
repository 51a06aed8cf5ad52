"""The engine core's loop (`core_process._CoreLoop`) over real pipes and a scripted fake engine.

One property per test: commands apply between steps and each turn sends one batch; a refused add
is a per-request failure; a failed step fails its live requests and the loop goes on; shutdown
and a vanished parent (pipe EOF) end the loop.
"""
from __future__ import annotations

import multiprocessing
import threading
from types import SimpleNamespace

import pytest

from lab.engine.core_messages import AbortRequest, AddRequest, Shutdown, StepBatch
from lab.engine.core_process import _CoreLoop
from lab.engine.sampling_params import SamplingParams


class FakeEngine:
    """Each step gives every request one token "t"; `max_tokens` ends it; `fail_next_step` raises once."""

    def __init__(self) -> None:
        self.requests: dict[str, list] = {}  # id -> [num tokens, max tokens]
        self.fail_next_step = False
        self.scheduler = SimpleNamespace(num_running=0, num_waiting=0)
        self.kv_cache_usage = 0.0

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def add_request(self, request_id, prompt, params, *, priority=0, deadline=None) -> None:
        if not prompt:
            raise ValueError("prompt is empty: at least one token is needed")
        self.requests[request_id] = [0, params.max_tokens]
        self._sync()

    def abort_request(self, request_id):
        if self.requests.pop(request_id, None) is None:
            return None
        self._sync()
        return _output(request_id, "", [], 0, "abort")

    def step(self):
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("CUDA error: boom")
        outs = []
        for request_id, state in list(self.requests.items()):
            state[0] += 1
            done = state[0] >= state[1]
            if done:
                del self.requests[request_id]
            outs.append(_output(request_id, "t", [state[0]], state[0], "length" if done else None))
        self._sync()
        return outs

    def _sync(self) -> None:
        self.scheduler.num_running = len(self.requests)
        self.kv_cache_usage = 0.1 * len(self.requests)


def _output(request_id, text, tokens, n, finish):
    metrics = SimpleNamespace(time_in_queue_s=0.0, num_preemptions=0)
    return SimpleNamespace(request_id=request_id, new_text=text, new_token_ids=tokens, num_output_tokens=n,
                           finished=finish is not None, finish_reason=finish, metrics=metrics, error=None,
                           new_logprobs=[])


@pytest.fixture
def core():
    """(engine, parent's command writer, parent's output reader, loop thread)."""
    commands_in, commands_out = multiprocessing.Pipe(duplex=False)
    outputs_in, outputs_out = multiprocessing.Pipe(duplex=False)
    engine = FakeEngine()
    loop = _CoreLoop(engine, commands_in, outputs_out)

    def run():
        try:
            loop.run()
        except (EOFError, OSError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    yield engine, commands_out, outputs_in, thread
    commands_out.close()
    thread.join(5)


def _recv(conn) -> StepBatch:
    assert conn.poll(5), "the core sent nothing"
    return conn.recv()


def test_a_request_streams_one_batch_per_step_then_finishes(core):
    engine, commands, outputs, thread = core
    commands.send([AddRequest("a", [1, 2], SamplingParams(max_tokens=3))])
    thread.start()
    batches = [_recv(outputs) for _ in range(3)]
    assert [[(o.request_id, o.num_output_tokens, o.finish_reason) for o in b.outputs] for b in batches] == [
        [("a", 1, None)], [("a", 2, None)], [("a", 3, "length")]]
    assert batches[0].stats.num_requests_running == 1 and batches[-1].stats.num_requests_running == 0
    assert not outputs.poll(0.3)  # idle: nothing more is sent


def test_refused_add_is_a_failure_and_others_still_run(core):
    engine, commands, outputs, thread = core
    commands.send([AddRequest("bad", [], SamplingParams()), AddRequest("ok", [1], SamplingParams(max_tokens=1))])
    thread.start()
    batch = _recv(outputs)
    assert [(f.request_id, f.refused) for f in batch.failures] == [("bad", True)]
    assert "empty" in batch.failures[0].message
    assert [(o.request_id, o.finish_reason) for o in batch.outputs] == [("ok", "length")]


def test_abort_frees_the_request_and_reports_its_end(core):
    engine, commands, outputs, thread = core
    commands.send([AddRequest("a", [1], SamplingParams(max_tokens=10_000))])
    thread.start()
    _recv(outputs)
    commands.send([AbortRequest("a"), AbortRequest("unknown")])
    while True:
        batch = _recv(outputs)
        ended = [o for o in batch.outputs if o.finish_reason is not None]
        if ended:
            break
    assert [(o.request_id, o.finish_reason) for o in ended] == [("a", "abort")]
    assert batch.stats.num_requests_running == 0 and batch.stats.kv_cache_usage_perc == 0.0


def test_failed_step_fails_its_live_requests_and_the_loop_goes_on(core):
    engine, commands, outputs, thread = core
    engine.fail_next_step = True
    commands.send([AddRequest("a", [1], SamplingParams(max_tokens=5)), AddRequest("b", [1], SamplingParams())])
    thread.start()
    batch = _recv(outputs)
    assert sorted((f.request_id, f.refused) for f in batch.failures) == [("a", False), ("b", False)]
    assert "boom" in batch.failures[0].message and not engine.requests  # both aborted: KV freed
    commands.send([AddRequest("c", [1], SamplingParams(max_tokens=1))])
    assert [o.finish_reason for o in _recv(outputs).outputs] == ["length"]


def test_shutdown_ends_the_loop(core):
    engine, commands, outputs, thread = core
    commands.send([Shutdown()])
    thread.start()
    thread.join(5)
    assert not thread.is_alive()


def test_parent_gone_ends_the_loop(core):
    engine, commands, outputs, thread = core
    thread.start()
    commands.close()  # the pipe's EOF is what the core sees when its parent dies
    thread.join(5)
    assert not thread.is_alive()
