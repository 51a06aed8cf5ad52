"""The serving engine: DeepSeek-family models on a paged KV cache with continuous batching.

Public API, in vLLM's vocabulary: `LLM`, `SamplingParams`, `RequestOutput`, `EngineArgs`,
`LLMEngine` (the synchronous step loop) and `AsyncLLM` (async deltas, for the server).
`core_process` / `core_client` run `LLMEngine` in a process of its own behind a pipe (what
`lab serve` does by default, as vLLM V1's EngineCore). Imports are lazy so that torch-free parts
(scheduler, block manager, the core client) load without torch.
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "LLM": "lab.engine.llm",
    "SamplingParams": "lab.engine.sampling_params",
    "RequestOutput": "lab.engine.outputs",
    "CompletionOutput": "lab.engine.outputs",
    "RequestMetrics": "lab.engine.outputs",
    "EngineArgs": "lab.engine.args",
    "LLMEngine": "lab.engine.engine",
    "AsyncLLM": "lab.engine.async_engine",
    "Priority": "lab.engine.sequence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lab.engine' has no attribute {name!r}")
