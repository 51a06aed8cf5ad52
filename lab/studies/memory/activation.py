"""Activation memory of one long prompt, unchunked against chunked prefill, and what each chunk size costs.

    points = measure_chunks(llm, prompt_len=8192, chunk_sizes=[8192, 4096, 2048, 1024, 512], repeats=2)
    best = recommend_chunk(points, max_cost=0.05)     # the smallest chunk within 5 % of unchunked throughput

Contract:
- `measure_chunks` runs one prompt of `prompt_len` random tokens to its first token (max_tokens=1) once per
  chunk size, after an unrecorded warm-up at that size (first-use kernel compiles), `repeats` times. The chunk
  size is the scheduler's step budget (`max_num_batched_tokens`), set on the live engine between runs, so every
  point shares one engine, one KV cache and one set of weights; the engine must be built with a budget of at
  least the largest chunk (its KV profile then covers the worst case).
- Peak activation bytes (CUDA only, else None) = the allocator's peak during the prefill minus what was allocated
  just before it (weights, KV cache, graphs' pools): what the prompt itself needed. Build the engine with
  `mixed_cuda_graphs=False`: a prefill chunk replayed from a captured graph takes its activations from the
  graph's pool, allocated at capture, and would read as ~0 here.
- Prefill time is the wall time to the first token (median over repeats); the throughput cost of a chunk
  size is 1 - its prefill tokens/s over the unchunked point's (the largest chunk >= prompt_len).
- `recommend_chunk(points, max_cost)` -> the smallest measured chunk whose cost is at most `max_cost`, or the
  unchunked size when none is; `reduction(points, chunk)` -> 1 - peak(chunk) / peak(unchunked) (None off CUDA).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

from lab.errors import LabError


@dataclass(frozen=True)
class ChunkPoint:
    chunk_tokens: int  # the step budget while the prompt was prefilled
    steps: int  # engine steps to the first token (= chunks)
    prefill_s: float  # median wall time to the first token
    prefill_tokens_per_s: float
    peak_activation_bytes: int | None  # CUDA: the allocator's peak above the level before the prompt


def _set_chunk(engine, chunk_tokens: int) -> None:
    config = engine.scheduler.config
    if not config.enable_chunked_prefill and chunk_tokens < engine.scheduler.config.max_num_batched_tokens:
        raise LabError("chunked prefill is off on this engine: build it with enable_chunked_prefill=True")
    engine.scheduler.config = dataclasses.replace(config, max_num_batched_tokens=chunk_tokens)


def _one_prefill(engine, prompt: list[int], request_id: str) -> tuple[float, int, int | None]:
    import torch

    from lab.engine.sampling_params import SamplingParams

    on_cuda = engine.device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(engine.device)
        torch.cuda.reset_peak_memory_stats(engine.device)
        resting = torch.cuda.memory_allocated(engine.device)
    start = time.perf_counter()
    engine.add_request(request_id, prompt, SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True))
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    if on_cuda:
        torch.cuda.synchronize(engine.device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(engine.device) - resting if on_cuda else None
    return elapsed, steps, peak


def measure_chunks(llm, prompt_len: int, chunk_sizes: list[int], repeats: int = 2, seed: int = 0) -> list[ChunkPoint]:
    from lab.engine.throughput import random_prompts

    engine = llm.engine
    budget = engine.scheduler.config.max_num_batched_tokens
    if max(chunk_sizes) > budget:
        raise LabError(f"chunk size {max(chunk_sizes)} is above the engine's max_num_batched_tokens ({budget}): "
                       "build the engine with a budget of at least the largest chunk")
    if prompt_len + 1 > engine.max_model_len:
        raise LabError(f"a {prompt_len}-token prompt does not fit max_model_len {engine.max_model_len}")
    if repeats < 1:
        raise LabError(f"repeats must be >= 1, got {repeats}")
    vocab = min(engine.model_config.vocab_size, 100_000)
    prompt = random_prompts(1, prompt_len, vocab, seed=seed)[0]
    points = []
    try:
        for chunk in chunk_sizes:
            _set_chunk(engine, chunk)
            _one_prefill(engine, prompt, f"warmup-{chunk}")  # first use of this chunk's shapes: not recorded
            runs = [_one_prefill(engine, prompt, f"chunk-{chunk}-{i}") for i in range(repeats)]
            median_s = statistics.median(r[0] for r in runs)
            peaks = [r[2] for r in runs if r[2] is not None]
            points.append(ChunkPoint(chunk, runs[0][1], median_s, prompt_len / median_s, max(peaks) if peaks else None))
    finally:
        _set_chunk(engine, budget)
    return points


def unchunked(points: list[ChunkPoint]) -> ChunkPoint:
    return max(points, key=lambda p: p.chunk_tokens)


def throughput_cost(points: list[ChunkPoint], point: ChunkPoint) -> float:
    return 1.0 - point.prefill_tokens_per_s / unchunked(points).prefill_tokens_per_s


def reduction(points: list[ChunkPoint], point: ChunkPoint) -> float | None:
    base = unchunked(points).peak_activation_bytes
    if base is None or point.peak_activation_bytes is None or base <= 0:
        return None
    return 1.0 - point.peak_activation_bytes / base


def recommend_chunk(points: list[ChunkPoint], max_cost: float = 0.05) -> int:
    fits = [p.chunk_tokens for p in points if throughput_cost(points, p) <= max_cost]
    return min(fits) if fits else unchunked(points).chunk_tokens
