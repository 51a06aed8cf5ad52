"""Peer (c): transformers' continuous batching on the offline set our engine runs (output tokens/s).

The manager is `--engine hf-cb`'s (`lab.server.hf_cb_manager.start_manager`: paged KV cache, its scheduler,
CUDA graphs captured by `warmup()`; what `generate_batch` and `transformers serve` run), on the same
transformers model as the decode peers. `generate_batch` would give every request one `max_new_tokens`;
the offline set draws one output length per request, so the requests go to the manager one by one with
their own length and no end token (ignore_eos, as our engine's offline run), all at once, and the clock
runs from the first `add_request` to the last finished output: prefill included, as in `measure_offline`.
The manager's start (its warm-up and the load check) is `startup_s`, outside the rate. A request that
ends short of its length, fails, or a manager thread that dies, raises: no partial rate is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lab.server.hf_cb_config import HFCBConfig
from lab.server.hf_cb_params import NO_EOS
from lab.server.hf_model import HFModel
from lab.studies.roofline.offline import OfflineRequest

POLL_S = 1.0  # how long one wait for an output lasts before the manager's thread is checked
STOP_S = 60.0


@dataclass(frozen=True)
class CBOfflinePoint:
    num_requests: int
    output_tokens: int
    wall_s: float
    output_tokens_per_s: float
    startup_s: float  # the manager's start: paged cache, warm-up (CUDA graphs), a 1-token load check


def measure_cb_offline(model: HFModel, requests: list[OfflineRequest], config: HFCBConfig) -> CBOfflinePoint:
    from lab.server.hf_cb_manager import start_manager

    start = time.perf_counter()
    manager = start_manager(model, config)
    startup_s = time.perf_counter() - start
    try:
        wall_s, tokens = run_offline(manager, requests)
    finally:
        manager.stop(block=True, timeout=STOP_S, hard_stop=True)
    output_tokens = sum(len(t) for t in tokens)
    return CBOfflinePoint(len(requests), output_tokens, wall_s, output_tokens / wall_s, startup_s)


def run_offline(manager: Any, requests: list[OfflineRequest]) -> tuple[float, list[list[int]]]:
    """Submit every request, wait for all; (wall seconds, each request's generated tokens in order)."""
    if not requests:
        raise ValueError("the offline set is empty")
    ids = [f"offline-{i}" for i in range(len(requests))]
    start = time.perf_counter()
    for rid, r in zip(ids, requests):
        manager.add_request(r.prompt_token_ids, request_id=rid, max_new_tokens=r.output_len, eos_token_id=NO_EOS)
    done: dict[str, list[int]] = {}
    while len(done) < len(ids):
        output = manager.get_result(timeout=POLL_S)
        if output is None:
            if not manager.is_running():
                raise RuntimeError(f"transformers' continuous batching stopped with {len(ids) - len(done)} requests "
                                   f"unfinished: {_fatal_error(manager)}")
            continue
        if output.error is not None:
            raise RuntimeError(f"transformers' continuous batching failed request {output.request_id}: {output.error}")
        if output.is_finished():
            done[output.request_id] = list(output.generated_tokens)
    wall_s = time.perf_counter() - start
    tokens = [done[rid] for rid in ids]
    short = [(rid, len(t), r.output_len) for rid, t, r in zip(ids, tokens, requests) if len(t) != r.output_len]
    if short:
        raise RuntimeError(f"transformers' continuous batching generated other lengths than asked: {short[:3]}")
    return wall_s, tokens


def _fatal_error(manager: Any) -> str:
    status = getattr(manager, "background_thread_status", None)
    error = getattr(status, "fatal_error", None)
    return f"{type(error).__name__}: {error}" if error is not None else "no error recorded"
