"""Peer (a): transformers' `generate` with a static KV cache and its decode forward under `torch.compile`.

transformers' documented fast path: a `StaticCache` makes the decode step's shapes fixed, and `generate`
then compiles the model's forward for the decode steps itself (`CompileConfig`; the prefill stays eager).
We pass the cache object rather than `cache_implementation="static"`, which would build a new cache, at new
addresses, on every call; the docs give both. `CompileConfig(mode="reduce-overhead", fullgraph=True)` is the
recipe's `torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)` in generate's own terms
(CUDA graphs; one graph). `compile=False` runs the same path eager (`disable_compile`): the CPU smoke profile,
where compiling would take minutes. Everything else is generate's own loop: its logits processors, stopping
criteria and bookkeeping run between the compiled steps, which is what a user of `generate` gets.
"""
from __future__ import annotations

import torch
from torch import nn

from lab.studies.roofline.peer_cache import StaticCachePeer


class StaticCacheGenerate(StaticCachePeer):
    def __init__(self, module: nn.Module, max_cache_len: int, compile: bool) -> None:
        super().__init__(module, max_cache_len, compile)
        self._config = self._compile_config() if compile else None

    def allow_graph_breaks(self) -> None:
        self.fullgraph = False
        self._config = self._compile_config()  # a config unlike the last: generate compiles the forward again

    def _compile_config(self):
        from transformers import CompileConfig

        config = CompileConfig(mode="reduce-overhead", fullgraph=self.fullgraph)
        # generate compiles on accelerators only; this flag (transformers' own, for tests) lets a CPU compile too.
        config._compile_all_devices = self._device.type == "cpu"
        return config

    @torch.inference_mode()
    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        self._cache.reset()  # in place: same tensors, position back to 0
        ids = torch.tensor([prompt], device=self._device)
        out = self.module.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
            pad_token_id=0, compile_config=self._config,
            disable_compile=not self.compiled, **{self._cache_kw: self._cache},
        )
        return out[0, len(prompt):].tolist()
