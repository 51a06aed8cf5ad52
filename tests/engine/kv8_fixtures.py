"""8-bit KV caches for tests: random paged caches coded as `kv_quant.QuantizedCache`, and model steps over them.

`quantized_like(cache, kv_cache_dtype, groups)` codes every row of a plain random cache (what the engine's
writers would have stored); `model_step_outputs_8bit` is `paged_fixtures.model_step_outputs` with the model's
spec stored as `kv_cache_dtype`: one step through a float32 model per attention backend, over the same coded
context, plus the caches each backend wrote. Shared by `test_kv_cache_8bit.py` and its `_interpret` twin.
"""
from __future__ import annotations

import torch

from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.kv_quant import QuantizedCache, kv_storage_dtype, quantize_rows
from lab.engine.loader import load_model
from tests.engine.paged_fixtures import random_step_meta


def quantized_like(cache: torch.Tensor, kv_cache_dtype: str, groups: tuple[int, ...] | None = None) -> QuantizedCache:
    groups = groups or (cache.shape[-1],)
    data, scale = quantize_rows(cache, kv_storage_dtype(kv_cache_dtype), groups)
    return QuantizedCache(data, scale, groups, cache.dtype)


def clone_cache(cache):
    if isinstance(cache, QuantizedCache):
        return QuantizedCache(cache.data.clone(), cache.scale.clone(), cache.groups, cache.compute_dtype)
    return cache.clone()


def model_step_outputs_8bit(
    model_name: str, overrides: dict, step: tuple[list[int], list[int]], block_size: int, kv_cache_dtype: str,
    backends=("reference", "torch"), device: str = "cpu", num_blocks: int = 64, model=None,
):
    """(hidden states per backend, caches written per backend) of one step over a random coded context."""
    torch.manual_seed(0)
    if model is None:
        model = load_model(model_name, torch.float32, device, hf_overrides=overrides).module
    spec = model.kv_cache_spec(torch.float32)
    plain = [tuple(c.normal_() for c in layer) for layer in allocate_kv_cache(spec, num_blocks, block_size, torch.device(device))]
    if kv_cache_dtype == "auto":
        caches = plain
    else:
        caches = [tuple(quantized_like(c, kv_cache_dtype, spec.groups(i)) for i, c in enumerate(layer)) for layer in plain]
    query_lens, seq_lens = step
    ids = torch.randint(2, 500, (sum(query_lens),), device=device)
    positions = torch.tensor([p for q, n in zip(query_lens, seq_lens) for p in range(n - q, n)], device=device)
    outs, written = {}, {}
    for backend in backends:
        meta = random_step_meta(query_lens, seq_lens, block_size, num_blocks, device, seed=7, backend=backend)
        written[backend] = [tuple(clone_cache(c) for c in layer) for layer in caches]
        with torch.inference_mode():
            outs[backend] = model(ids, positions, written[backend], meta)
    return outs, written
