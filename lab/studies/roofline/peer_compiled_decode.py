"""Peer (b): a gpt-fast-style decode loop of our own over the transformers model's weights and forward.

gpt-fast's design, applied to the model a user already has: the model file stays vanilla (transformers'
own forward, the same weights), the KV cache is preallocated once (`peer_cache`), the prompt is prefilled
eagerly in one forward, and only the hot function, the one-token step (forward + greedy argmax), goes
through `torch.compile(mode="reduce-overhead", fullgraph=True)`: CUDA graphs, one graph per step. The
loop is ours and stays on the device: no logits processors, no stopping criteria, no host sync between
steps; the tokens land in a preallocated device buffer and reach the host once, at the end. So (a) minus
(b) is what `generate`'s own loop costs around the same compiled forward. The step's position comes from
the cache itself (its position counter is a tensor at a fixed address), so the graph takes the previous
token only. Not copied from gpt-fast: their model, their cache and their inductor settings
(coordinate-descent tuning) are not used; inductor runs with its defaults.
`compile=False` runs the same loop eager (the CPU smoke profile).
"""
from __future__ import annotations

import torch
from torch import nn

from lab.studies.roofline.peer_cache import StaticCachePeer


class CompiledDecodeLoop(StaticCachePeer):
    def __init__(self, module: nn.Module, max_cache_len: int, compile: bool) -> None:
        super().__init__(module, max_cache_len, compile)
        self._step = self._compile() if compile else self._next_token

    def allow_graph_breaks(self) -> None:
        self.fullgraph = False
        self._step = self._compile()

    def _compile(self):
        return torch.compile(self._next_token, mode="reduce-overhead", fullgraph=self.fullgraph)

    def _next_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(1, T) token ids -> (1, 1) the greedy next token; writes their K/V at the cache's position."""
        cache = {self._cache_kw: self._cache}
        logits = self.module(input_ids=input_ids, use_cache=True, logits_to_keep=1, **cache).logits  # (1, 1, vocab)
        return logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)

    @torch.inference_mode()
    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        self._cache.reset()  # in place: the graphs keep reading the same tensors
        out = torch.empty(new_tokens, dtype=torch.long, device=self._device)
        token = self._next_token(torch.tensor([prompt], device=self._device))  # prefill, eager: one shape per prompt
        out[0] = token[0, 0]
        for i in range(1, new_tokens):
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may be overwritten now
            token = self._step(token).clone()  # clone: a CUDA graph's output lives in memory the next replay reuses
            out[i] = token[0, 0]
        return out.tolist()
