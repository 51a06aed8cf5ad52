"""8-bit KV cache on the GPU: CUDA graphs over fp8/int8 caches, bf16 fidelity, and the block count at real shapes.

Skipped without CUDA (the kernels' own tests, compiled on a GPU, are `test_kv_cache_8bit_interpret.py`).
- graphs: decode (and, for GQA, mixed-step) graphs over a `QuantizedCache` sample the same greedy tokens as
  `enforce_eager` with the same cache dtype (float32 model, as test_cuda_graphs_gpu.py, so only the paths differ);
- bf16: an 8-bit cache keeps the logits close to "auto" (cosine on a shared context, as the CPU test) and
  never produces non-finite values;
- sizing: R1-Distill-Qwen-1.5B's 128-wide heads get >= 1.9x the blocks of bf16 from the same memory share.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = [list(range(100, 100 + n)) for n in (5, 40, 170, 300)]


def _generate(model: str, **kw):
    from lab.engine import LLM, SamplingParams

    llm = LLM(model, max_model_len=1024, max_num_seqs=8, num_gpu_blocks=256, hf_overrides={"num_hidden_layers": 4}, **kw)
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)], llm


@pytest.mark.parametrize("kv", ["fp8", "int8"])
@pytest.mark.parametrize("model", ["r1-distill-qwen-1.5b", "tiny"])
def test_graphs_over_8bit_cache_match_eager(model, kv) -> None:
    eager, _ = _generate(model, kv_cache_dtype=kv, enforce_eager=True, dtype="float32", max_num_batched_tokens=96)
    graphed, llm = _generate(model, kv_cache_dtype=kv, dtype="float32", max_num_batched_tokens=96)
    assert llm.engine.graphs is not None
    assert [t[:16] for t in graphed] == [t[:16] for t in eager]


@pytest.mark.parametrize("model", ["r1-distill-qwen-1.5b", "tiny"])
def test_bf16_8bit_cache_logits_stay_close_to_auto(model) -> None:
    from lab.studies.memory.variants import greedy_with_logits
    from tests.engine.test_kv_cache_8bit import MIN_MEAN_COSINE, _mean_cosine_on_shared_context

    def run(kv):
        _, llm = _generate(model, kv_cache_dtype=kv)
        return greedy_with_logits(llm, PROMPTS, 16), llm

    base, _ = run("auto")
    for kv in ("fp8", "int8"):
        got, llm = run(kv)
        cosine = _mean_cosine_on_shared_context(base, got)
        print(f"{model} bf16 {kv}: mean logits cosine {cosine:.5f}")
        assert cosine >= MIN_MEAN_COSINE[kv]
        codes = llm.engine.runner.kv_caches[0][0].data  # e4m3 has NaN codes (a missed clamp), int8 none
        assert codes.float().isfinite().all()


def test_fp8_cache_holds_nearly_twice_the_blocks_at_real_shapes() -> None:
    from lab.engine import LLM

    kw = dict(max_model_len=2048, hf_overrides={"num_hidden_layers": 4}, gpu_memory_utilization=0.3,
              enforce_eager=True)
    import gc

    blocks = {}
    for kv in ("auto", "fp8"):  # one engine at a time: this process's memory counts against the share
        llm = LLM("r1-distill-qwen-1.5b", kv_cache_dtype=kv, **kw)
        blocks[kv] = llm.engine.num_blocks
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    plain, fp8 = blocks["auto"], blocks["fp8"]
    assert fp8 / plain >= 1.9, (plain, fp8)
