"""Decode at a fixed batch size: step time, tokens/s and MBU against the roofline.

`measure_decode(llm, batch, prompt_len, decode_steps)` queues `batch` random prompts of
`prompt_len` tokens (ignore_eos, exactly 1 + `decode_steps` output tokens each), runs engine steps
until every request has its first token (the prefill, timed on its own: `prefill_s` for
`prefill_tokens` = batch x prompt_len; chunked prefill may run a few decode tokens of the requests that
started first beside it, so it slightly overstates), then times the next `decode_steps` steps, which are
pure decode steps of exactly `batch` sequences. Each step ends in the sampler's
host copy of the tokens, so the wall time of a step includes the GPU work and all CPU overhead
(scheduling, input preparation, sampling, detokenization): what a user of the engine sees.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from lab.studies.roofline.step_bytes import StepBytes, roofline_step_s, step_bytes
from lab.engine.llm import LLM
from lab.engine.sampling_params import SamplingParams
from lab.engine.throughput import random_prompts


@dataclass(frozen=True)
class DecodePoint:
    batch: int
    avg_context: float  # mean tokens in context over the timed steps
    step_s: float  # mean wall time of one decode step
    tokens_per_s: float  # batch / step_s
    bytes_per_step: float  # weights read + KV read (roofline.step_bytes)
    achieved_bytes_per_s: float
    mbu: float | None  # achieved_bytes_per_s / card bandwidth (None: unknown card)
    roofline_step_s: float | None
    roofline_tokens_per_s: float | None
    weight_bytes: float
    kv_bytes: float
    prefill_s: float  # wall time until every sequence had its first token
    prefill_tokens: int  # prompt tokens of that prefill: batch x prompt_len


def measure_decode(
    llm: LLM, batch: int, prompt_len: int, decode_steps: int, bandwidth: float | None, seed: int = 0
) -> DecodePoint:
    engine = llm.engine
    prompts = random_prompts(batch, prompt_len, min(engine.model_config.vocab_size, 100_000), seed=seed)
    params = SamplingParams(temperature=0.0, max_tokens=decode_steps + 1, ignore_eos=True)
    ids = [f"decode-b{batch}-{i}" for i in range(batch)]
    for rid, prompt in zip(ids, prompts):
        engine.add_request(rid, prompt, params)
    started: set[str] = set()
    prefill_start = time.perf_counter()
    while len(started) < batch:  # prefill (maybe chunked) until every request has sampled once
        started.update(o.request_id for o in engine.step())
    start = time.perf_counter()
    prefill_s = start - prefill_start
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    step_s = (time.perf_counter() - start) / max(steps, 1)
    avg_context = prompt_len + 1 + (steps - 1) / 2  # context grows by one per step
    nbytes: StepBytes = step_bytes(engine.model, engine.kv_cache_spec.bytes_per_token, batch, avg_context)
    achieved = nbytes.total / step_s
    roof = roofline_step_s(nbytes, bandwidth) if bandwidth else None
    return DecodePoint(
        batch=batch,
        avg_context=avg_context,
        step_s=step_s,
        tokens_per_s=batch / step_s,
        bytes_per_step=nbytes.total,
        achieved_bytes_per_s=achieved,
        mbu=achieved / bandwidth if bandwidth else None,
        roofline_step_s=roof,
        roofline_tokens_per_s=batch / roof if roof else None,
        weight_bytes=nbytes.weight_bytes,
        kv_bytes=nbytes.kv_bytes,
        prefill_s=prefill_s,
        prefill_tokens=batch * prompt_len,
    )
