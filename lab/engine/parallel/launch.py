"""Start a tensor-parallel group: the engine's own process is rank 0 (the leader), one worker process per other rank.

Contract: `start_tensor_parallel(args, device)` (called by `LLMEngine` when `args.tensor_parallel_size > 1`)
checks that the ranks fit the visible devices, starts `python -m lab.engine.parallel.worker` for ranks
1..N-1, and returns rank 0's `TensorParallel` once every rank has joined the group (nccl on CUDA, gloo on
CPU; rank r on cuda:(first + r)). A worker that exits before joining is reported at once with its exit
status, not after a rendezvous timeout. `stop_workers` ends them (the leader's `TensorParallel.shutdown`).

Why worker *subprocesses* and not `torch.multiprocessing.spawn` or torchrun: the engine usually runs inside
`lab serve`'s engine core, a daemonic multiprocessing child, and daemonic processes may not start
multiprocessing children; torchrun would have to wrap the whole server. A subprocess has no such limit, and
each worker is told its rank, the rendezvous address and the engine's arguments on its stdin. The pipe stays
open: a worker exits when it closes (the leader died without a word), so no rank outlives its engine.
Single host only (the rendezvous listens on 127.0.0.1).
"""
from __future__ import annotations

import atexit
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lab.engine.parallel.plan import check_devices
from lab.engine.parallel.state import TensorParallel

JOIN_TIMEOUT_S = 300.0  # every worker must have imported torch and reached the rendezvous by then
JOIN_POLL_S = 0.2  # how often the leader checks that its workers are still alive while they join
STOP_TIMEOUT_S = 10.0  # a worker told to stop gets this long before it is killed


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker reads from its stdin: everything it needs to build its rank of the engine."""

    args: object  # EngineArgs
    rank: int
    size: int
    device: str
    store_port: int
    num_threads: int  # torch threads, the same on every rank (see start_tensor_parallel)


def rank_device(device: torch.device, rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    first = device.index if device.index is not None else torch.cuda.current_device()
    return torch.device("cuda", first + rank)


def start_tensor_parallel(args, device: torch.device) -> TensorParallel:
    size = args.tensor_parallel_size
    if dist.is_initialized():
        raise RuntimeError("this process already holds a torch.distributed group (another tensor-parallel engine?): "
                           "shut that engine down first (LLMEngine.shutdown) or use another process")
    leader = rank_device(device, 0)
    check_devices(device.type, size, leader.index or 0, torch.cuda.device_count() if device.type == "cuda" else 0)
    # CPU ranks share the host's cores: each takes its share of the leader's threads (oversubscribed OpenMP
    # threads spin against each other), and all use the same count, so a replicated op gives the same bits.
    threads_before = torch.get_num_threads()
    threads = max(1, threads_before // size) if device.type == "cpu" else threads_before
    store = dist.TCPStore("127.0.0.1", 0, size, is_master=True, timeout=timedelta(seconds=JOIN_TIMEOUT_S),
                          wait_for_workers=False)
    workers = []
    try:
        for rank in range(1, size):
            spec = WorkerSpec(args, rank, size, str(rank_device(device, rank)), store.port, threads)
            proc = subprocess.Popen([sys.executable, "-m", "lab.engine.parallel.worker"], stdin=subprocess.PIPE)
            workers.append(proc)
            proc.stdin.write(pickle.dumps(spec))
            proc.stdin.flush()  # kept open: its EOF is the worker's signal that the leader is gone
        _wait_joined(store, workers)
        tp = join_group(0, size, leader, store)
    except BaseException:
        stop_workers(workers)
        raise
    tp.workers = workers
    atexit.register(tp.shutdown)  # a notebook or script that never calls LLMEngine.shutdown still ends its workers
    if threads != threads_before:
        torch.set_num_threads(threads)
        tp.threads_before = threads_before  # given back at shutdown
    return tp


def join_group(rank: int, size: int, device: torch.device, store) -> TensorParallel:
    """Join the group as `rank` (every rank calls this) and return this rank's `TensorParallel`."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store.set(f"joined/{rank}", "1")
    if device.type == "cuda":  # device_id: the NCCL communicator is made now, never lazily inside a graph capture
        dist.init_process_group("nccl", store=store, rank=rank, world_size=size, device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size)
    cpu_group = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    return TensorParallel(rank, size, device, dist.group.WORLD, cpu_group)


def _wait_joined(store, workers: list[subprocess.Popen]) -> None:
    keys = [f"joined/{rank}" for rank in range(1, len(workers) + 1)]
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        for rank, proc in enumerate(workers, start=1):
            if proc.poll() is not None:
                raise RuntimeError(f"tensor-parallel worker rank {rank} exited with status {proc.returncode} before "
                                   "joining the group (its error is in this process's stderr)")
        if store.check(keys):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"tensor-parallel workers did not join within {JOIN_TIMEOUT_S:.0f} s")
        time.sleep(JOIN_POLL_S)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Close each worker's stdin (its signal to exit), wait a little, then kill what is left."""
    for proc in workers:
        try:
            proc.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in workers:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
