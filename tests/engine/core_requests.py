"""Requests through a real engine core process, for the isolation tests (one device and tensor parallel).

`poison(max_tokens)` is a sampled request whose top_k no tensor can hold, built the way unpickling builds it (no
checks), so it fails in sampling. `run_core(client, adds)` sends the requests to a started `EngineCoreClient` and
returns (token ids by request, failure by request) once every request has ended.
"""
from __future__ import annotations

import copyreg
import queue

from lab.engine.core_client import EngineCoreClient
from lab.engine.core_messages import AddRequest
from lab.engine.sampling_params import SamplingParams


def poison(max_tokens: int = 6) -> SamplingParams:
    params = copyreg.__newobj__(SamplingParams)
    for name, value in SamplingParams(temperature=1.0, max_tokens=max_tokens).__dict__.items():
        object.__setattr__(params, name, value)
    object.__setattr__(params, "top_k", 2**70)
    return params


def run_core(client: EngineCoreClient, adds: list[AddRequest]) -> tuple[dict, dict]:
    batches: queue.SimpleQueue = queue.SimpleQueue()
    tokens: dict[str, list[int]] = {a.request_id: [] for a in adds}
    failures, done = {}, set()
    client.listen(batches.put, lambda reason, expected: None)
    for add in adds:
        client.send(add)
    while len(done) < len(adds):
        batch = batches.get(timeout=60)
        for out in batch.outputs:
            tokens[out.request_id] += out.new_token_ids
            if out.finish_reason is not None:
                done.add(out.request_id)
        for failure in batch.failures:
            failures[failure.request_id] = failure
            done.add(failure.request_id)
    return tokens, failures
