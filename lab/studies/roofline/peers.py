"""The peers a user would pick instead of our engine, measured in the same run on the same card (study 01).

`measure_peers(model, decode_prompt, new_tokens, requests, config)` runs, on one transformers model (the
`hf` engine's: the preset's shapes, our engine's dummy weights):
  hf_static  (a) transformers' `generate`, static cache, decode forward compiled (`peer_static_generate`)
  gptfast    (b) our gpt-fast-style loop over the same forward, one-token step compiled (`peer_compiled_decode`)
  hf_cb      (c) transformers' continuous batching on the offline set (`peer_cb_offline`)
(a) and (b) decode at batch 1 from the engine's batch-1 prompt for as many tokens as its timed steps, so
all three decode the same shape; (c) gets the engine's offline requests. Each greedy decode is compared
with transformers' plain `generate` (eager, dynamic cache) on that prompt: `agree_prefix_tokens`. Random
weights give near-flat logits, so compiled bf16 kernels may flip an argmax after a few tokens on a GPU;
the exact check is the CPU test (`tests/studies/test_roofline_peers.py`).
A peer that cannot run here (transformers 5.17's paged cache and DeepSeek MLA, an out-of-memory, a compile
error) is recorded in `failures` with its error, and the others still run: no number stands in for it.
Between peers the compiled functions, their CUDA-graph pools and the manager are released, so the manager,
which sizes its KV cache from free memory, sees the card as the other peers do.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from lab.server.hf_cb_config import HFCBConfig
from lab.server.hf_model import HFModel
from lab.studies.roofline.offline import OfflineRequest
from lab.studies.roofline.peer_cb_offline import CBOfflinePoint, measure_cb_offline
from lab.studies.roofline.peer_compiled_decode import CompiledDecodeLoop
from lab.studies.roofline.peer_static_generate import StaticCacheGenerate
from lab.studies.roofline.peer_timing import DecodePeerPoint, measure_decode_peer

logger = logging.getLogger(__name__)

PEER_LABELS = {  # metric name part -> what it is, for tables and plots
    "hf_static": "transformers generate + static cache + torch.compile",
    "gptfast": "gpt-fast-style loop (ours) over the transformers model + torch.compile",
    "hf_cb": "transformers continuous batching (generate_batch's manager)",
}


@dataclass(frozen=True)
class PeerConfig:
    compile: bool = True  # torch.compile the decode peers' step (False: the same code eager, for a CPU smoke run)
    warmup_calls: int = 2  # warm-up rounds before timing (compile, CUDA-graph recording); reported apart
    repeats: int = 3  # timed rounds; the fastest call of each kind counts
    cb: HFCBConfig = field(default_factory=HFCBConfig)  # the manager's sizes (None fields: transformers' own)

    def __post_init__(self) -> None:
        if self.warmup_calls < 1 or self.repeats < 1:
            raise ValueError(f"peer warmup_calls and repeats must be >= 1, got {self.warmup_calls} and {self.repeats}")

    @classmethod
    def from_params(cls, compile: bool, warmup_calls: int, repeats: int, cb_sizes: dict) -> PeerConfig:
        """The notebook's parameters: `cb_sizes` holds `HFCBConfig` fields ({}: transformers' own sizes)."""
        known = {f.name for f in fields(HFCBConfig)}
        unknown = sorted(set(cb_sizes) - known)
        if unknown:
            raise ValueError(f"unknown continuous batching sizes {unknown}; known: {sorted(known)}")
        return cls(compile, warmup_calls, repeats, HFCBConfig(**cb_sizes))


@dataclass(frozen=True)
class PeerResults:
    hf_static: DecodePeerPoint | None
    gptfast: DecodePeerPoint | None
    hf_cb: CBOfflinePoint | None
    failures: dict[str, str] = field(default_factory=dict)  # peer -> "ErrorType: message"


def measure_peers(model: HFModel, decode_prompt: list[int], new_tokens: int, requests: list[OfflineRequest],
                  config: PeerConfig) -> PeerResults:
    if new_tokens < 2:
        raise ValueError(f"the decode peers need >= 2 new tokens (one timed decode step), got {new_tokens}")
    if not decode_prompt:
        raise ValueError("the decode peers need a prompt of at least one token")
    failures: dict[str, str] = {}
    hf_cb = _attempt("hf_cb", failures, lambda: measure_cb_offline(model, requests, config.cb))
    _release(model.module)
    reference = plain_generate(model.module, decode_prompt, new_tokens)
    max_cache_len = len(decode_prompt) + new_tokens

    def decode(peer_cls: type[StaticCacheGenerate] | type[CompiledDecodeLoop]) -> DecodePeerPoint:
        peer = peer_cls(model.module, max_cache_len, config.compile)
        return measure_decode_peer(peer, decode_prompt, new_tokens, reference, config.warmup_calls, config.repeats)

    hf_static = _attempt("hf_static", failures, partial(decode, StaticCacheGenerate))
    _release(model.module)
    gptfast = _attempt("gptfast", failures, partial(decode, CompiledDecodeLoop))
    _release(model.module)
    return PeerResults(hf_static, gptfast, hf_cb, failures)


@torch.inference_mode()
def plain_generate(module: nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    """transformers' plain greedy `generate` (eager, dynamic cache): the peers' token reference."""
    ids = torch.tensor([prompt], device=next(module.parameters()).device)
    out = module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _attempt(name: str, failures: dict[str, str], measure: Callable):
    try:
        return measure()
    except Exception as exc:  # one peer that cannot run here must not cost the others (or the engine's numbers)
        failures[name] = f"{type(exc).__name__}: {exc}"
        logger.warning("peer %s (%s) failed: %s", name, PEER_LABELS[name], failures[name])
        return None


def _release(module: nn.Module) -> None:
    """Drop compiled code, CUDA-graph pools and freed blocks, so the next peer starts from the same card."""
    for name in ("_compiled_call", "_last_compile_config"):  # generate keeps its compiled forward on the model
        module.__dict__.pop(name, None)
    torch._dynamo.reset()  # also resets the CUDA-graph trees
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
