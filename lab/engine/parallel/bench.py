"""Decode step time at a tensor-parallel size, and the share of it the collectives take.

    from lab.engine.parallel.bench import decode_step_times
    rows = decode_step_times("r1-distill-qwen-7b", tp_size=2, batch_sizes=[1, 8, 32], steps=50)
    eager = decode_step_times("r1-distill-qwen-7b", 2, [1, 8], 20, enforce_eager=True, time_collectives=True)

Contract: one engine (`LLMEngine`, `tensor_parallel_size=tp_size`, any other `EngineArgs` as keywords) serves
every batch size in turn: `batch_size` requests of `prompt_len` seeded random tokens are prefilled, `warmup`
decode steps run, then `steps` decode steps are timed one by one (host clock around `engine.step()`, which
returns once the step's tokens are on the host, so each time is a whole step as a client sees it). Each
`DecodeStepTime` gives the median step and tokens/s = batch_size / median step. With `time_collectives`,
the leader's all-reduces and all-gathers are timed too (`state.CollectiveTimer`: CUDA events around each on a
GPU, the host clock on CPU) and counted: `collective_share` = their time per step / the mean step time. A CUDA
graph replays its collectives where no timer runs, so timing them asks for `enforce_eager=True` on CUDA
(an error says so otherwise); step times with graphs come from a second call without `time_collectives`.
The engine is shut down (workers stopped) before the call returns. Works on gloo (CPU smoke) and nccl alike.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from lab.engine.args import EngineArgs
from lab.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class DecodeStepTime:
    batch_size: int
    tensor_parallel_size: int
    step_s: float  # median decode step, seconds
    tokens_per_s: float  # batch_size / step_s
    cuda_graphs: bool  # whether decode steps replayed CUDA graphs
    collective_s: float | None = None  # collectives' time per step (time_collectives), seconds
    collective_share: float | None = None  # collective_s / mean step time
    collectives_per_step: dict[str, float] | None = None  # calls per step by kind ("all_reduce", "all_gather")


def decode_step_times(model: str, tp_size: int, batch_sizes: list[int], steps: int, *, warmup: int = 2,
                      prompt_len: int = 16, seed: int = 0, time_collectives: bool = False,
                      **engine_kwargs) -> list[DecodeStepTime]:
    """See the module docstring."""
    from lab.engine.engine import LLMEngine  # torch: only when a benchmark runs
    from lab.engine.parallel.state import CollectiveTimer

    if steps < 1 or warmup < 0 or prompt_len < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("steps and prompt_len must be >= 1, warmup >= 0, batch_sizes non-empty and >= 1")
    engine_kwargs.setdefault("max_num_seqs", max(batch_sizes))
    engine = LLMEngine(EngineArgs(model=model, tensor_parallel_size=tp_size, **engine_kwargs))
    try:
        graphs = engine.graphs is not None
        if time_collectives and graphs:
            raise ValueError("time_collectives needs enforce_eager=True on CUDA: a graph replays its collectives "
                             "where no timer can see them")
        timer = None
        if time_collectives and engine.parallel is not None:
            timer = engine.parallel.timer = CollectiveTimer(engine.device)
        rng = random.Random(seed)
        vocab = engine.model_config.vocab_size
        rows = []
        for batch in batch_sizes:
            params = SamplingParams(temperature=0.0, max_tokens=warmup + steps + 2, ignore_eos=True)
            ids = [f"bench-{batch}-{i}" for i in range(batch)]
            for rid in ids:
                engine.add_request(rid, [rng.randrange(vocab) for _ in range(prompt_len)], params)
            _prefill(engine, ids)
            for _ in range(warmup):
                engine.step()
            if timer is not None:
                timer.reset()
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - start)
            rows.append(_row(batch, tp_size, times, graphs, timer, steps, time_collectives))
            while engine.has_unfinished_requests():  # a few steps: max_tokens ends them
                engine.step()
        return rows
    finally:
        engine.shutdown()


def _prefill(engine, request_ids: list[str]) -> None:
    """Step until every request has its first token (its prompt computed): what follows is decode only."""
    started: set[str] = set()
    while len(started) < len(request_ids):
        for out in engine.step():
            if out.new_token_ids:
                started.add(out.request_id)


def _row(batch: int, tp_size: int, times: list[float], graphs: bool, timer, steps: int,
         time_collectives: bool) -> DecodeStepTime:
    median = statistics.median(times)
    row = DecodeStepTime(batch, tp_size, median, batch / median, graphs)
    if not time_collectives:
        return row
    collective_s = timer.collect() / steps if timer is not None else 0.0  # one device: no collectives
    calls = {k: v / steps for k, v in timer.calls.items()} if timer is not None else {}
    return DecodeStepTime(batch, tp_size, median, batch / median, graphs, collective_s,
                          collective_s / statistics.fmean(times), calls)
