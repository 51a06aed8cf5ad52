"""One engine run, phase by phase, for the allocator's timeline: `engine_memory_run(timeline, model, ...)`.

The target `lab.gpu.memory_compare.compare_allocators` starts in a fresh process per allocator configuration
(default, `expandable_segments:True`): it builds an `LLMEngine` whose start-up phases (weight read and transfer,
KV profile and allocation, graph capture) are booked to the timeline under the engine's own names, then serves
`num_requests` prompts of `prompt_len` tokens, all queued at once: a `prefill` phase until every request has its
first token, then `decode` until all are done. Module level and JSON-able arguments only: a child imports it by
name. With `record_history`, the allocator's event history is recorded too (`lab.gpu.memory_history`) and its
per-phase summary returned in the timeline's process (for the notebook's timeline plot).
"""
from __future__ import annotations

from typing import Any


def engine_memory_run(timeline, model: str, engine_args: dict[str, Any] | None = None, prompt_len: int = 1024,
                      output_len: int = 64, num_requests: int = 16, seed: int = 0) -> None:
    from lab.engine.args import EngineArgs
    from lab.engine.engine import LLMEngine
    from lab.engine.sampling_params import SamplingParams
    from lab.engine.throughput import random_prompts

    engine = LLMEngine(EngineArgs(model=model, **(engine_args or {})), memory_timeline=timeline)
    vocab = min(engine.model_config.vocab_size, 100_000)
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    for i, prompt in enumerate(random_prompts(num_requests, prompt_len, vocab, seed=seed)):
        engine.add_request(f"memory-{i}", prompt, params)
    started: set[str] = set()
    with timeline.phase("prefill"):
        while len(started) < num_requests and engine.has_unfinished_requests():
            started.update(o.request_id for o in engine.step())
    with timeline.phase("decode"):
        while engine.has_unfinished_requests():
            engine.step()
