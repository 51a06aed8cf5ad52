"""Hot reload in the engine (`LLMEngine.update_weights`): the new weights are exactly a fresh engine's, a drain
keeps old requests on the old weights token for token, and a bad checkpoint is refused with serving untouched.

Checkpoints are written by transformers itself (tests/engine/hf_fixtures.py): two of the same architecture with
different seeds. The references are a fresh engine on each checkpoint and transformers' own `generate()`.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lab.engine import LLM, SamplingParams
from lab.engine.weight_standby import ReloadError
from tests.engine.hf_fixtures import make_tiny_checkpoint
from tests.engine.test_generate import _hf_greedy, _prompts, _vocab

MAX_NEW = 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)
ARGS = dict(dtype="float32", num_gpu_blocks=64, block_size=4)


@pytest.fixture(scope="module", params=["qwen2", "deepseek_v3"])  # deepseek: MLA's derived w_uk/w_uv_t too
def two_checkpoints(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return (request.param, make_tiny_checkpoint(request.param, root / "a", seed=0),
            make_tiny_checkpoint(request.param, root / "b", seed=1))


def tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_a_switch_serves_exactly_the_new_checkpoint(two_checkpoints):
    kind, a, b = two_checkpoints
    prompts = _prompts(_vocab(a))
    llm = LLM(str(a), **ARGS)
    on_a = tokens(llm.generate(prompts, GREEDY))
    record = llm.update_weights(str(b))
    assert record["outcome"] == "switched" and record["generation"] == 1 and record["version"] == str(b.resolve())
    assert record["pause_ms"] >= 0 and record["probe_token"] >= 0
    on_b = tokens(llm.generate(prompts, GREEDY))
    assert on_b == tokens(LLM(str(b), **ARGS).generate(prompts, GREEDY)) == _hf_greedy(b, prompts, MAX_NEW), kind
    assert on_b != on_a  # the seeds differ: a reload that changed nothing would pass the equality above
    llm.update_weights(str(a))  # and back
    assert tokens(llm.generate(prompts, GREEDY)) == on_a


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_a_drain_finishes_old_requests_on_the_old_weights_and_starts_new_ones_on_the_new(two_checkpoints,
                                                                                        async_scheduling):
    kind, a, b = two_checkpoints
    prompts = _prompts(_vocab(a))
    expect_a = tokens(LLM(str(a), **ARGS).generate(prompts, GREEDY))
    expect_b = tokens(LLM(str(b), **ARGS).generate(prompts, GREEDY))
    engine = LLM(str(a), async_scheduling=async_scheduling, **ARGS).engine
    for i, p in enumerate(prompts):
        engine.add_request(f"old-{i}", p, GREEDY)
    finished = {}
    for _ in range(3):  # the old requests are mid-way
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    record = engine.update_weights(str(b), policy="drain")
    assert record["outcome"] == "draining" and engine.weights_version == str(a.resolve())  # old still live
    for i, p in enumerate(prompts):
        engine.add_request(f"new-{i}", p, GREEDY)
    while engine.has_unfinished_requests():
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    assert [finished[f"old-{i}"].outputs[0].token_ids for i in range(len(prompts))] == expect_a, kind
    assert [finished[f"new-{i}"].outputs[0].token_ids for i in range(len(prompts))] == expect_b, kind
    engine.step()  # nothing left of the old generation: the standby is copied in
    assert engine.weights_version == str(b.resolve()) and engine.reloader.history[-1]["outcome"] == "promoted"
    assert engine.runner.standby is None
    llm = LLM.__new__(LLM)
    llm.engine, llm._ids = engine, iter(range(100, 200))
    assert tokens(llm.generate(prompts, GREEDY)) == expect_b  # the live path (graphs on a GPU) now holds b
    assert llm.update_weights(str(a))["outcome"] == "switched"  # the drain's `promoted` record is not in the way
    assert tokens(llm.generate(prompts, GREEDY)) == expect_a


def _corrupt(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    path = dst / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_a_bad_checkpoint_is_refused_by_name_and_nothing_in_flight_fails(two_checkpoints, tmp_path):
    kind, a, b = two_checkpoints
    prompts = _prompts(_vocab(a))
    expect_a = tokens(LLM(str(a), **ARGS).generate(prompts, GREEDY))
    nan = tmp_path / "nan"
    _corrupt(b, nan, lambda t: t["model.layers.1.mlp.down_proj.weight" if kind == "qwen2" else
                                 "model.layers.1.mlp.experts.0.down_proj.weight"].fill_(float("nan")))
    missing = tmp_path / "missing"
    _corrupt(b, missing, lambda t: t.pop("model.norm.weight"))
    other = tmp_path / "other"
    shutil.copytree(b, other)
    config = json.loads((other / "config.json").read_text())
    layers = config["num_hidden_layers"]
    config["num_hidden_layers"] = layers + 1
    (other / "config.json").write_text(json.dumps(config))

    engine = LLM(str(a), **ARGS).engine
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, GREEDY)
    engine.step()
    with pytest.raises(ReloadError, match=r"non-finite .*down_proj\.weight"):
        engine.update_weights(str(nan))
    with pytest.raises(ReloadError, match="model.norm.weight"):
        engine.update_weights(str(missing))
    with pytest.raises(ReloadError, match=f"num_hidden_layers: live {layers}, new {layers + 1}"):
        engine.update_weights(str(other))
    with pytest.raises(ReloadError, match="neither a preset"):
        engine.update_weights(str(tmp_path / "nowhere"))
    with pytest.raises(ReloadError, match="policy must be one of"):
        engine.update_weights(str(b), policy="swap")
    finished = {}
    while engine.has_unfinished_requests():
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    assert [finished[f"r{i}"].outputs[0].token_ids for i in range(len(prompts))] == expect_a
    assert all(finished[f"r{i}"].error is None for i in range(len(prompts)))
    assert engine.weights_version == str(a.resolve()) and engine.reloader.version.generation == 0


def test_a_preset_reload_equals_a_fresh_engine_with_that_seed():
    args = dict(hf_overrides={"num_hidden_layers": 2}, num_gpu_blocks=64, block_size=16)
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300]]
    llm = LLM("tiny", seed=0, **args)
    before = tokens(llm.generate(prompts, GREEDY))
    record = llm.update_weights("tiny", seed=3, staging="host")  # on a CPU the host is the device
    assert (record["staging"], record["version"]) == ("device", "tiny@seed3")
    after = tokens(llm.generate(prompts, GREEDY))
    assert after == tokens(LLM("tiny", seed=3, **args).generate(prompts, GREEDY)) and after != before
    with pytest.raises(ReloadError, match="another architecture"):  # refused from its config alone: nothing built
        llm.update_weights("r1-distill-qwen-1.5b")
    assert torch.is_grad_enabled()  # the probe's inference mode did not leak into the caller


def test_an_fp8_engine_reloads_into_the_same_fp8_rounding_a_fresh_one_applies():
    args = dict(hf_overrides={"num_hidden_layers": 2}, num_gpu_blocks=64, block_size=16, quantization="fp8")
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300]]
    llm = LLM("tiny", seed=0, **args)
    llm.update_weights("tiny", seed=3)
    fresh = LLM("tiny", seed=3, **args)
    assert all(torch.equal(a, b) for a, b in zip(llm.engine.model.state_dict().values(),
                                                  fresh.engine.model.state_dict().values()))
    assert tokens(llm.generate(prompts, GREEDY)) == tokens(fresh.generate(prompts, GREEDY))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_repeated_reloads_reuse_one_standby_of_device_memory():
    # Each standby once came from a new CUDA stream, whose freed blocks the allocator never gave to the next one:
    # every reload kept another copy of the weights reserved until a large model's reload found no room.
    llm = LLM("r1-distill-qwen-1.5b", hf_overrides={"num_hidden_layers": 4}, max_model_len=512, num_gpu_blocks=64)
    weights = sum(t.numel() * t.element_size() for t in llm.engine.model.state_dict().values())
    assert llm.update_weights("r1-distill-qwen-1.5b", seed=1)["staging"] == "device"
    reserved = torch.cuda.memory_reserved()
    for seed in (2, 3, 4):
        llm.update_weights("r1-distill-qwen-1.5b", seed=seed)
    assert torch.cuda.memory_reserved() - reserved < weights / 2
