"""The preallocated KV cache of the batch-1 decode peers: transformers' own `StaticCache`, one per peer.

Both decode peers keep one `StaticCache` of `prompt + new tokens` positions for every call and `reset()` it
in place before each generation: its tensors (and its position counter) keep their addresses, so a compiled
step's CUDA graphs replay instead of being recorded again for a new cache. transformers 5.25 renamed the
argument that carries a cache from `past_key_values` to `cache` (the old name still works there, with a
deprecation warning); `cache_kwarg` reads the name from the model's own `forward`, so both the GPU image's
5.17 and this workstation's 5.25 get the name they expect. `StaticCachePeer` is what both peers hold: the module,
its cache and that keyword, whether the step is compiled, and whether it must be one graph (`fullgraph`).
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def static_cache(module: nn.Module, max_cache_len: int) -> Any:
    from transformers import StaticCache

    if max_cache_len < 2:
        raise ValueError(f"max_cache_len must be >= 2 (a prompt token and a new one), got {max_cache_len}")
    return StaticCache(config=module.config, max_cache_len=max_cache_len)


def cache_kwarg(module: nn.Module) -> str:
    """The keyword that hands a cache to `module.forward` and `module.generate` in the installed transformers."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class StaticCachePeer:
    def __init__(self, module: nn.Module, max_cache_len: int, compile: bool) -> None:
        self.module = module
        self.compiled = compile
        self.fullgraph = True  # `allow_graph_breaks` clears it where the model breaks the graph
        self._cache = static_cache(module, max_cache_len)
        self._cache_kw = cache_kwarg(module)
        self._device = next(module.parameters()).device
