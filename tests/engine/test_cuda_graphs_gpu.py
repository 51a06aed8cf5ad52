"""CUDA graphs for steps with prefill chunks (`cuda_graphs.MixedGraphs`) vs the eager engine, on the GPU.

Skipped without CUDA. Chunked prefill with a small step budget makes most steps mix a prompt chunk
over cached context with decode rows; the graphed engine must sample the same greedy tokens as
`enforce_eager`, and must really have replayed mixed graphs (counted) while doing so. In float32:
eager prefill without cached context takes SDPA where the graph takes the varlen kernel, and with
dummy weights the logits are flat enough that bf16 rounding flips near-ties within a few tokens.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _generate(eager: bool, **kw):
    from lab.engine import LLM, SamplingParams

    llm = LLM("r1-distill-qwen-1.5b", enforce_eager=eager, max_model_len=1024, max_num_seqs=8,
              num_gpu_blocks=512, hf_overrides={"num_hidden_layers": 4}, **kw)
    replays = [0]
    if llm.engine.mixed_graphs is not None:
        run = llm.engine.mixed_graphs.run

        def counted(*args):
            replays[0] += 1
            return run(*args)

        llm.engine.mixed_graphs.run = counted
    prompts = [list(range(100, 100 + n)) for n in (5, 40, 170, 300, 700)]
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params)], llm, replays[0]


def test_mixed_step_graphs_match_eager() -> None:
    budget = dict(max_num_batched_tokens=96, dtype="float32")  # prompts arrive in chunks beside decodes
    eager, eager_llm, _ = _generate(True, **budget)
    graphed, llm, replays = _generate(False, **budget)
    assert eager_llm.engine.mixed_graphs is None
    assert llm.engine.mixed_graphs is not None and llm.engine.mixed_graphs.buckets[-1] == 96
    assert replays > 10  # the 1,215 prompt tokens went through mixed graphs, 96 at a time
    assert [t[:16] for t in graphed] == [t[:16] for t in eager]


def test_mixed_graphs_off_by_flag_and_for_mla() -> None:
    from lab.engine import LLM

    kw = dict(max_model_len=256, max_num_seqs=4, num_gpu_blocks=64, hf_overrides={"num_hidden_layers": 2})
    assert LLM("r1-distill-qwen-1.5b", mixed_cuda_graphs=False, **kw).engine.mixed_graphs is None
    mla = LLM("tiny", **kw).engine  # MLA's mixed path loops over prefill chunks: never captured
    assert mla.mixed_graphs is None and mla.graphs is not None
