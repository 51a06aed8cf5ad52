"""`hf_generate.run_batch` on a real transformers model: our stop rules, not generate()'s, end rows.

The tiny model (1 layer) gets an lm_head row that makes EOS the greedy token at every step. In one
static batch, a request with ignore_eos must run to max_tokens past EOS, while its neighbour stops
at the first EOS with finish_reason stop, and the EOS token is not part of its text.
"""
from __future__ import annotations

import asyncio

import torch

from lab.engine.args import EngineArgs
from lab.engine.detokenizer import IncrementalDetokenizer
from lab.engine.sampling_params import SamplingParams
from lab.engine.sequence import FinishReason
from lab.server.hf_generate import run_batch
from lab.server.hf_model import load_hf_model
from lab.server.hf_request import HFRequest

PROMPT = [5, 6, 7]


def test_ignore_eos_runs_past_eos_while_its_batch_neighbour_stops():
    model = load_hf_model(EngineArgs(model="tiny", hf_overrides={"num_hidden_layers": 1}, max_model_len=64))
    with torch.no_grad():  # EOS's logit = hidden . w; with w a large multiple of the final norm's scale it wins
        model.module.lm_head.weight[model.eos_token_id] = 1000.0 * model.module.model.norm.weight

    async def run() -> list[HFRequest]:
        loop = asyncio.get_running_loop()
        requests = [HFRequest(f"r{i}", PROMPT, SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=ignore),
                              IncrementalDetokenizer(model.tokenizer, PROMPT), loop)
                    for i, ignore in enumerate((True, False))]
        await asyncio.to_thread(run_batch, model, requests)
        return requests

    going, stopping = asyncio.run(run())
    assert going.seq.output_token_ids[0] == model.eos_token_id  # the model really chose EOS
    assert len(going.seq.output_token_ids) == 5 and going.seq.finish_reason is FinishReason.LENGTH
    assert stopping.seq.output_token_ids == [model.eos_token_id] and stopping.seq.finish_reason is FinishReason.STOP
