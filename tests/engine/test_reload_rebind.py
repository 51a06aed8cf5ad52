"""A hot reload's switch as a pointer swap (`lab.engine.weight_rebind`), on the CPU: the bookkeeping of the swap
(record fields, version, generation, the retired module released), the drain's promotion, and every road to the
copy (the knob, host staging, no room for a second graph set, a failed graph capture) with the reason it records.

The CPU engine is eager, so its pointer switch is the module swap alone; the graph set's own tests need a GPU
(test_hot_reload.py, `-k graph_set`). Token references: a fresh engine on the new weights, and the copy switch.
"""
from __future__ import annotations

import gc
import types
import weakref

import pytest

from lab.engine import LLM, SamplingParams
from lab.engine.args import EngineArgs
from lab.engine.weight_rebind import Rebind, choose_rebind
from lab.engine.weight_standby import ReloadError

TINY = dict(hf_overrides={"num_hidden_layers": 2, "vocab_size": 4096}, num_gpu_blocks=64, block_size=16)  # fast
PROMPTS = [[5, 6, 7, 8, 9], [100, 200, 300], [42] * 20]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
GIB = 2**30


def tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_a_pointer_switch_repoints_the_engine_and_releases_the_retired_module():
    llm = LLM("tiny", seed=0, **TINY)
    before = tokens(llm.generate(PROMPTS, GREEDY))
    engine = llm.engine
    retired, retired_weight = weakref.ref(engine.model), weakref.ref(next(engine.model.parameters()))
    record = llm.update_weights("tiny", seed=3)
    assert (record["outcome"], record["version"], record["generation"]) == ("switched", "tiny@seed3", 1), record
    assert record["rebind"] == "pointer" and "rebind_reason" not in record, record
    assert "switch_copy_ms" not in record, "a pointer switch copies nothing"
    assert record["pause_ms"] == pytest.approx(record["switch_host_ms"] + record["release_ms"]), record
    assert engine.runner.model is engine.model and engine.graphs is None and engine.runner.graphs is None
    assert retired() is None, "the retired module is still referenced after the switch (who holds it?)"
    assert retired_weight() is None, "a weight of the retired module is still referenced after the switch"
    after = tokens(llm.generate(PROMPTS, GREEDY))
    assert after == tokens(LLM("tiny", seed=3, **TINY).generate(PROMPTS, GREEDY)), "not the new weights' tokens"
    assert after != before  # the seeds differ: a switch that changed nothing would pass the equality above
    assert llm.update_weights("tiny", seed=0)["generation"] == 2  # and back, a second swap
    assert tokens(llm.generate(PROMPTS, GREEDY)) == before


def test_requests_running_across_a_pointer_switch_get_what_the_copy_switch_gives_them():
    """A switch keeps every request's KV: the pointer swap and the copy (the plain path) must agree token for token."""
    results = {}
    for rebind in ("copy", "auto"):
        engine = LLM("tiny", seed=0, reload_rebind=rebind, **TINY).engine
        for i, p in enumerate(PROMPTS):
            engine.add_request(f"r{i}", p, GREEDY)
        finished = {}
        for _ in range(3):
            finished.update({o.request_id: o for o in engine.step() if o.finished})
        assert engine.update_weights("tiny", seed=3)["rebind"] == ("copy" if rebind == "copy" else "pointer")
        while engine.has_unfinished_requests():
            finished.update({o.request_id: o for o in engine.step() if o.finished})
        results[rebind] = [finished[f"r{i}"].outputs[0].token_ids for i in range(len(PROMPTS))]
    assert results["auto"] == results["copy"]


def test_a_drain_promotes_by_pointer_and_releases_the_old_module():
    expect_new = tokens(LLM("tiny", seed=3, **TINY).generate(PROMPTS, GREEDY))
    engine = LLM("tiny", seed=0, **TINY).engine
    engine.add_request("old", PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    engine.step()
    retired = weakref.ref(engine.model)
    record = engine.update_weights("tiny", seed=3, policy="drain")
    assert (record["outcome"], record["rebind"]) == ("draining", "pointer"), record
    standby = engine.runner.standby
    assert standby is not None and engine.runner.standby_graphs == (None, None)  # eager: no graphs to give it
    for i, p in enumerate(PROMPTS):
        engine.add_request(f"new-{i}", p, GREEDY)
    finished = {}
    while engine.has_unfinished_requests():
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    engine.step()  # nothing old left: the promotion
    promoted = engine.reloader.history[-1]
    assert (promoted["outcome"], promoted["rebind"], promoted["generation"]) == ("promoted", "pointer", 1), promoted
    assert engine.model is standby and engine.runner.model is standby and engine.runner.standby is None
    del standby
    assert retired() is None, "the drained module is still referenced after its promotion"
    assert [finished[f"new-{i}"].outputs[0].token_ids for i in range(len(PROMPTS))] == expect_new


# ---- the roads to the copy -----------------------------------------------------------------------------------
def test_choose_rebind_says_why_it_copies():
    assert choose_rebind("auto", "device", False, None, None) == Rebind("pointer")  # eager: the module swap
    assert choose_rebind("auto", "device", True, 8 * GIB, 5 * GIB) == Rebind("pointer")
    assert choose_rebind("copy", "device", True, 8 * GIB, 5 * GIB) == Rebind("copy", "reload_rebind is 'copy'")
    host = choose_rebind("auto", "host", True, None, None)
    assert host.mode == "copy" and "host memory" in host.reason
    tight = choose_rebind("auto", "device", True, 4 * GIB, 5 * GIB)
    assert tight.mode == "copy" and "no room for a second set of CUDA graphs" in tight.reason
    assert "5.00 GiB" in tight.reason and "4.00 GiB" in tight.reason
    with pytest.raises(ReloadError, match="'pointer' cannot be honoured: no room"):
        choose_rebind("pointer", "device", True, 4 * GIB, 5 * GIB)
    with pytest.raises(ReloadError, match="'pointer' cannot be honoured: the standby is staged in host memory"):
        choose_rebind("pointer", "host", False, None, None)
    with pytest.raises(ValueError, match="reload_rebind must be one of"):
        EngineArgs(reload_rebind="swap")


def test_the_copy_knob_copies_and_says_so():
    llm = LLM("tiny", seed=0, reload_rebind="copy", **TINY)
    live = llm.engine.model
    record = llm.update_weights("tiny", seed=3)
    assert (record["rebind"], record["rebind_reason"]) == ("copy", "reload_rebind is 'copy'"), record
    assert record["switch_copy_ms"] >= 0 and "release_ms" not in record
    assert llm.engine.model is live  # the copy writes into the live tensors
    assert tokens(llm.generate(PROMPTS, GREEDY)) == tokens(LLM("tiny", seed=3, **TINY).generate(PROMPTS, GREEDY))


def _pretend_graphed(engine, monkeypatch, free_bytes: int, pool_bytes: int) -> None:
    """Make the reloader see a graph engine with `free_bytes` reloadable (the runner itself stays eager)."""
    monkeypatch.setattr(engine, "graphs", types.SimpleNamespace(), raising=False)  # has no `twin`: cannot capture
    monkeypatch.setattr(engine, "graph_pool_bytes", pool_bytes, raising=False)
    monkeypatch.setattr("lab.engine.weight_reload.reloadable_bytes", lambda device: free_bytes)


def test_no_room_for_a_second_graph_set_falls_back_to_the_copy_or_refuses_a_pointer_knob(monkeypatch):
    llm = LLM("tiny", seed=0, **TINY)
    _pretend_graphed(llm.engine, monkeypatch, free_bytes=1 * GIB, pool_bytes=4 * GIB)
    record = llm.update_weights("tiny", seed=3)
    assert record["rebind"] == "copy" and "no room for a second set of CUDA graphs" in record["rebind_reason"], record
    assert tokens(llm.generate(PROMPTS, GREEDY)) == tokens(LLM("tiny", seed=3, **TINY).generate(PROMPTS, GREEDY))

    strict = LLM("tiny", seed=0, reload_rebind="pointer", **TINY)
    _pretend_graphed(strict.engine, monkeypatch, free_bytes=1 * GIB, pool_bytes=4 * GIB)
    with pytest.raises(ReloadError, match="cannot be honoured: no room for a second set of CUDA graphs"):
        strict.update_weights("tiny", seed=3)
    assert strict.engine.weights_version == "tiny@seed0" and not strict.engine.reloader.busy  # nothing started


def test_a_failed_graph_capture_falls_back_to_the_copy(monkeypatch):
    llm = LLM("tiny", seed=0, **TINY)
    _pretend_graphed(llm.engine, monkeypatch, free_bytes=64 * GIB, pool_bytes=0)
    record = llm.update_weights("tiny", seed=3)
    assert record["outcome"] == "switched" and record["rebind"] == "copy", record
    assert "capturing CUDA graphs over the new weights failed (AttributeError" in record["rebind_reason"], record
    assert tokens(llm.generate(PROMPTS, GREEDY)) == tokens(LLM("tiny", seed=3, **TINY).generate(PROMPTS, GREEDY))
    gc.collect()  # the failed capture's partial state is garbage, never the live model's
    assert llm.engine.runner.model is llm.engine.model
