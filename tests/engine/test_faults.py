"""Fault injection at the step boundary (`lab.engine.faults`) on a real `LLMEngine` (tiny, 2 layers, CPU).

Each fault has the effect it claims: oom raise fails exactly the next N steps (or the steps of D seconds) with
CUDA's out-of-memory error; a hung step blocks until its duration or a clear; a slow step adds its delay;
NaN weights end every request with an error naming non-finite logits (no garbage token), the runner reports
itself degraded, and clear restores the very same tokens. With no fault armed the step never calls the
fault module: the hook is None and a counting controller sees no call.
"""
from __future__ import annotations

import threading
import time

import pytest
import torch

from lab.engine.args import EngineArgs
from lab.engine.core_messages import HangStepFault, NanWeightsFault, OomFault, SlowStepFault
from lab.engine.engine import LLMEngine
from lab.engine.faults import EngineFaults
from lab.engine.launched_step import NonFiniteLogitsError
from lab.engine.sampling_params import SamplingParams

PROMPTS = ([1, 2, 3, 4], [5, 6, 7])
MAX_TOKENS = 6


def build(**overrides) -> LLMEngine:
    return LLMEngine(EngineArgs(model="tiny", device="cpu", hf_overrides={"num_hidden_layers": 2},
                                num_gpu_blocks=64, max_model_len=256, max_num_seqs=4, **overrides))


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return build()


@pytest.fixture
def faults(engine: LLMEngine):
    controller = EngineFaults(engine)
    yield controller
    controller.clear()
    assert engine.fault_hook is None


_ids = iter(range(10**6))


def add(engine: LLMEngine, prompt: list[int], max_tokens: int = MAX_TOKENS) -> str:
    request_id = f"req-{next(_ids)}"
    engine.add_request(request_id, prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
    return request_id


def run(engine: LLMEngine, prompts=PROMPTS) -> dict[str, object]:
    """Each prompt to its end, in order: {prompt index: its final RequestOutput}."""
    ids = [add(engine, list(p)) for p in prompts]
    finished = {}
    for _ in range(100):
        if not engine.has_unfinished_requests():
            break
        finished.update({out.request_id: out for out in engine.step() if out.finished})
    return {i: finished[rid] for i, rid in enumerate(ids)}


def drain(engine: LLMEngine) -> None:
    for _ in range(100):
        if not engine.has_unfinished_requests():
            return
        try:
            engine.step()
        except torch.cuda.OutOfMemoryError:
            pass


class CountingFaults(EngineFaults):
    calls = 0

    def before_step(self) -> None:
        self.calls += 1
        super().before_step()


def test_the_step_never_calls_the_fault_module_when_nothing_is_armed(engine):
    counting = CountingFaults(engine)
    assert engine.fault_hook is None
    counting.arm(SlowStepFault(delay_ms=1.0))
    add(engine, [1, 2, 3], max_tokens=3)
    for _ in range(3):
        engine.step()
    assert counting.calls == 3  # armed: once per step
    counting.clear()
    assert engine.fault_hook is None
    add(engine, [1, 2, 3], max_tokens=3)
    drain(engine)
    assert counting.calls == 3  # disarmed: the steps ran, the module was not called once
    counting.arm(NanWeightsFault())  # acts through the weights alone: no per-step hook either
    assert engine.fault_hook is None
    counting.clear()


def test_oom_raise_fails_exactly_the_next_n_steps(engine, faults):
    record = faults.arm(OomFault(mode="raise", steps=2))
    assert record["mode"] == "raise" and record["device"] == "cpu" and record["armed_at_monotonic_s"] > 0
    add(engine, [1, 2, 3], max_tokens=3)
    for _ in range(2):
        with pytest.raises(torch.cuda.OutOfMemoryError, match="injected by lab fault injection"):
            engine.step()
    assert faults.armed() == [] and engine.fault_hook is None  # spent: disarmed by itself
    engine.step()  # the third step runs
    (ended,) = faults.recent()
    assert ended["steps_hit"] == 2 and ended["ended_by"] == "steps"
    drain(engine)


def test_oom_with_a_duration_fails_every_step_until_it_ends(engine, faults):
    faults.arm(OomFault(mode="raise", duration_s=0.3))
    add(engine, [1, 2, 3], max_tokens=3)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.step()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.step()
    time.sleep(0.4)
    engine.step()
    assert faults.armed() == [] and faults.recent()[-1]["ended_by"] == "duration"
    drain(engine)


def test_oom_auto_raises_on_a_cpu_and_allocate_is_refused_there(engine, faults):
    assert faults.arm(OomFault())["mode"] == "raise"  # auto: allocate needs CUDA
    faults.clear()
    with pytest.raises(ValueError, match="needs a CUDA device"):
        faults.arm(OomFault(mode="allocate"))
    assert faults.armed() == [] and engine.fault_hook is None


def test_a_hung_step_blocks_until_cleared(engine, faults):
    faults.arm(HangStepFault(duration_s=60.0))
    add(engine, [1, 2, 3], max_tokens=2)
    stepper = threading.Thread(target=engine.step, daemon=True)
    started = time.monotonic()
    stepper.start()
    stepper.join(0.5)
    assert stepper.is_alive()  # hung
    faults.clear()
    stepper.join(10.0)
    assert not stepper.is_alive() and time.monotonic() - started < 10.0
    ended = faults.recent()[-1]
    assert ended["kind"] == "hang_step" and ended["ended_by"] == "clear"
    drain(engine)


def test_a_hung_step_ends_after_its_duration(engine, faults):
    faults.arm(HangStepFault(duration_s=0.3))
    add(engine, [1, 2, 3], max_tokens=2)
    started = time.monotonic()
    engine.step()
    assert time.monotonic() - started >= 0.3
    ended = faults.recent()[-1]
    assert ended["ended_by"] == "duration" and 0.3 <= ended["hung_s"] < 5.0
    assert faults.armed() == []  # one step only
    drain(engine)


def _step_s(engine: LLMEngine) -> float:
    started = time.monotonic()
    engine.step()
    return time.monotonic() - started


def test_a_slow_step_adds_its_delay_to_every_step(engine, faults):
    add(engine, [1, 2, 3], max_tokens=12)
    engine.step()  # prefill
    plain_s = min(_step_s(engine) for _ in range(3))  # min: a shared machine only ever adds time
    faults.arm(SlowStepFault(delay_ms=200.0))
    slow_s = [_step_s(engine) for _ in range(3)]
    assert all(s >= 0.2 for s in slow_s)  # every step, not on average
    assert min(slow_s) - plain_s >= 0.16 and min(slow_s) < plain_s + 2.0
    drain(engine)


def test_nan_weights_end_requests_with_an_error_and_clear_restores_the_same_tokens(engine, faults):
    before = run(engine)
    weight = engine.model.get_parameter("model.layers.0.self_attn.o_proj.weight")
    original = weight.detach().clone()
    record = faults.arm(NanWeightsFault())
    assert record["weight"] == "model.layers.0.self_attn.o_proj.weight" and torch.isnan(weight).all()
    hit = run(engine)
    for out in hit.values():
        assert out.finish_reason == "abort" and out.outputs[0].token_ids == []  # no garbage token
        assert "non-finite logits" in out.error
    assert engine.runner.logits_health.degraded is not None
    faults.clear()
    assert torch.equal(weight, original) and engine.runner.logits_health.degraded is None
    after = run(engine)
    assert [o.outputs[0].token_ids for o in after.values()] == [o.outputs[0].token_ids for o in before.values()]
    assert all(len(o.outputs[0].token_ids) == MAX_TOKENS for o in after.values())


def test_nan_weights_name_a_layer_or_a_weight_and_refuse_unknown_ones(engine, faults):
    assert faults.arm(NanWeightsFault(layer=1))["weight"] == "model.layers.1.self_attn.o_proj.weight"
    faults.clear()
    with pytest.raises(ValueError, match="no weight named 'model.layers.9.self_attn.o_proj.weight'"):
        faults.arm(NanWeightsFault(layer=9))
    with pytest.raises(ValueError, match="no weight named 'nope'"):
        faults.arm(NanWeightsFault(weight="nope"))
    assert faults.armed() == []


def test_nan_weights_under_async_scheduling_fail_the_step_and_leave_the_engine_sound():
    engine = build(async_scheduling=True)  # CUDA's default: step N's tokens are read after step N+1 launched
    faults = EngineFaults(engine)
    before = run(engine)
    faults.arm(NanWeightsFault())
    ids = [add(engine, list(p)) for p in PROMPTS]
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        for _ in range(3):
            engine.step()
    for request_id in ids:  # what the engine core does when a step raises: fail every live request
        engine.abort_request(request_id)
    assert not engine.has_unfinished_requests() and engine.runner.logits_health.degraded is not None
    faults.clear()
    after = run(engine)
    assert [o.outputs[0].token_ids for o in after.values()] == [o.outputs[0].token_ids for o in before.values()]
