"""transformers' `ContinuousBatchingManager` for `--engine hf-cb`: started, and read for /metrics.

Contract:
- `start_manager(model, config)` starts the manager on `model.module` (the `hf` engine's model: same
  weights for a preset) as `transformers serve` does: `init_continuous_batching`, `warmup()` (CUDA
  graphs where transformers uses them), `start()`. It decodes greedily (`do_sample=False`: argmax,
  no logits processors), since `do_sample` is one setting for the whole manager; the backend
  refuses sampled requests. Sizes come from `HFCBConfig` (None: transformers' own, from memory).
  EOS is off at the manager level (-1); each request passes its own end tokens to `add_request`.
  Attention is what the manager picks (flash when installed and the dtype allows, else paged SDPA
  or eager), logged once. Then `check_first_request` runs one 1-token request: a model the
  manager cannot run fails the load with the manager's own error, not the first client.
- `manager_load(manager)` is the manager's own view of its load: running = its scheduler's active
  requests, waiting = its scheduler's waiting requests plus its not yet drained input queue,
  kv_cache_usage = the used fraction of its paged cache. These are attributes transformers' own
  `transformers serve` reads (5.25); 5.17 counts free blocks instead of free capacity. Unlike vLLM's
  gauge, 5.25's counts blocks kept for prefix reuse as used: it stays above 0 once requests finished.
Versions: the API used is in transformers 5.17 and 5.25 (the GPU machines run 5.17, this workstation
5.25); the KV block size's name (`block_size`, `page_size` from 5.25) is bridged, and a version
without the manager's API fails with an error saying what is missing. 5.17's paged cache cannot hold
DeepSeek MLA's keys and values (their head sizes differ: an `index_copy_` shape error); 5.25 serves
them. On 5.17 the DeepSeek presets therefore fail the load check, naming the error.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from lab.server.backend import BackendStats
from lab.server.hf_cb_config import HFCBConfig
from lab.server.hf_cb_params import NO_EOS
from lab.server.hf_model import HFModel

logger = logging.getLogger(__name__)

LOAD_CHECK_ID = "lab-hf-cb-load-check"
LOAD_CHECK_S = 300.0  # the first step may compile kernels or capture graphs
MANAGER_METHODS = ("add_request", "cancel_request", "get_result", "start", "stop", "warmup", "is_running")


def start_manager(model: HFModel, config: HFCBConfig) -> Any:
    import transformers
    from transformers import GenerationConfig

    cb_config_cls = getattr(transformers, "ContinuousBatchingConfig", None)
    if cb_config_cls is None or not hasattr(model.module, "init_continuous_batching"):
        raise RuntimeError(f"--engine hf-cb needs transformers >= 5.17 (ContinuousBatchingConfig and "
                           f"init_continuous_batching); installed: {transformers.__version__}")
    generation_config = GenerationConfig(do_sample=False, eos_token_id=NO_EOS, max_new_tokens=model.max_model_len)
    manager = model.module.init_continuous_batching(generation_config=generation_config,
                                                    continuous_batching_config=cb_config(cb_config_cls, config))
    missing = [name for name in MANAGER_METHODS if not hasattr(manager, name)]
    if missing:
        raise RuntimeError(f"transformers {transformers.__version__}'s ContinuousBatchingManager lacks "
                           f"{', '.join(missing)}: --engine hf-cb was written against 5.17 to 5.25")
    manager.warmup()
    manager.start()
    check_first_request(manager, transformers.__version__)
    logger.info("transformers %s continuous batching: attention %s, %s", transformers.__version__,
                model.module.config._attn_implementation, config)
    return manager


def cb_config(cb_config_cls: type, config: HFCBConfig) -> Any:
    """transformers' `ContinuousBatchingConfig` with the sizes `config` sets (the others its defaults)."""
    names = {f.name for f in dataclasses.fields(cb_config_cls)}
    # 5.25 renamed the KV block size to page_size (block_size still works there, with a deprecation warning).
    block_field = "page_size" if "page_size" in names else "block_size"
    given = {"max_batch_tokens": config.max_batch_tokens, "num_blocks": config.num_blocks,
             block_field: config.block_size, "max_requests_per_batch": config.max_requests_per_batch}
    return cb_config_cls(**{name: value for name, value in given.items() if value is not None})


def manager_load(manager: Any) -> BackendStats:
    queued = manager.input_queue.qsize()  # added, not yet taken by the generation thread
    processor = manager.batch_processor
    if processor is None:  # the generation thread has not built it yet (or the manager stopped)
        return BackendStats(num_requests_running=0, num_requests_waiting=queued, kv_cache_usage=0.0)
    scheduler, cache = processor.scheduler, processor.cache
    if hasattr(cache, "compute_free_capacity"):  # 5.25
        used = 1.0 - cache.compute_free_capacity()
    else:  # 5.17
        used = 1.0 - cache.get_num_free_blocks() / cache.num_blocks
    return BackendStats(num_requests_running=len(scheduler.active_requests),
                        num_requests_waiting=len(scheduler.waiting_requests) + queued,
                        kv_cache_usage=min(max(used, 0.0), 1.0))


def check_first_request(manager: Any, version: str) -> None:
    """Run one 1-token request through the started manager, so a model its paged cache cannot hold fails
    the load, saying why, rather than the first client's request (transformers 5.17's cache, e.g., cannot
    hold DeepSeek MLA's keys and values, whose head sizes differ; 5.25's can)."""
    manager.add_request([0], request_id=LOAD_CHECK_ID, max_new_tokens=1, streaming=False)
    output = manager.get_result(timeout=LOAD_CHECK_S)  # nothing else is in flight while the model loads
    status = getattr(manager, "background_thread_status", None)
    error = output.error if output is not None else getattr(status, "fatal_error", None) or "no answer in time"
    if output is None or output.error is not None:
        manager.stop(block=True, timeout=LOAD_CHECK_S, hard_stop=True)
        raise RuntimeError(f"transformers {version}'s continuous batching cannot serve this model: a 1-token "
                           f"request failed at load: {error}")
