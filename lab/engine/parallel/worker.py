"""A tensor-parallel worker (rank >= 1): builds its rank of the engine, then runs every step the leader sends.

    python -m lab.engine.parallel.worker      # started by launch.py; reads a pickled WorkerSpec on stdin

Design (why every worker builds a whole `LLMEngine` and then only follows): the leader (rank 0) is the only
rank that schedules, samples, detokenizes and talks to clients. A worker needs the same model shard layout,
KV cache, graphs and runner, built through the same constructor, so that the collectives inside the
constructor (the KV block count every rank can hold, activation profiling and graph capture on CUDA) happen
in the same order on every rank. Its scheduler and tokenizer are built and never used (cheap, and no second
construction path to keep in step).

Why the leader broadcasts each step's inputs rather than every rank running the same scheduler: the
scheduler's decisions depend on wall-clock time (deadlines, arrival order across a pipe) and on the sampled
tokens, which only the leader has; a broadcast record (`runner.StepArrays`, a few numpy arrays) makes the
ranks agree by construction. Its cost is one small gloo broadcast per step on the host, overlapped with
the GPU under async scheduling (vLLM V1 sends the same thing through a shared-memory queue: faster, more code).

`follow_leader(runner, tp)`: per step record, the same device inputs (`ModelRunner.device_inputs`), the chained
input ids from the leader when the step has any, and the same `ModelRunner.step_logits` (graph replay or eager,
chosen from the same metadata, so the collectives match, then the logits' all-gather); no sampling. A `None`
record ends it.
"""
from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
from datetime import timedelta

import torch

logger = logging.getLogger(__name__)


def follow_leader(runner, tp) -> None:
    """A worker's step loop (see the module docstring); returns when the leader says stop."""
    with torch.inference_mode():
        while (step := tp.recv_step()) is not None:
            inputs = runner.device_inputs(step, step.block_table_lists(), [])
            if step.chained:
                tp.broadcast(inputs.input_ids)  # the leader's sampled tokens of the previous step
            runner.step_logits(inputs, runner.model)  # the leader's forward and logits' all-gather; no sampling


def _exit_when_leader_gone() -> None:
    """The leader holds our stdin open for its lifetime: EOF means it is gone (or told us to stop)."""
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def main() -> None:
    from lab.engine.engine import LLMEngine
    from lab.engine.parallel.launch import JOIN_TIMEOUT_S, join_group

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s tp-worker %(name)s: %(message)s")
    spec = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_exit_when_leader_gone, name="leader-watch", daemon=True).start()
    exit_code = 0
    try:
        torch.set_num_threads(spec.num_threads)
        store = torch.distributed.TCPStore("127.0.0.1", spec.store_port, spec.size, is_master=False,
                                           timeout=timedelta(seconds=JOIN_TIMEOUT_S))
        tp = join_group(spec.rank, spec.size, torch.device(spec.device), store)
        engine = LLMEngine(spec.args, parallel=tp)
        follow_leader(engine.runner, tp)
    except BaseException:  # the leader sees its collectives fail (gloo) or time out (nccl); say why here
        logger.exception("tensor-parallel worker rank %d failed", spec.rank)
        exit_code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # no interpreter teardown (a CUDA context and a KV cache take seconds to tear down)


if __name__ == "__main__":
    main()
