"""How a collective is timed on one rank (torch): nccl-tests' loop, and the same operation replayed from a CUDA graph.

Contract: `time_per_op(run, warmup, iters, sync) -> seconds` runs `warmup` untimed operations, waits for them
(`sync`) and for every rank (a barrier, so no rank's clock starts while a peer is still warming up), then times
`iters` operations back to back with one wall clock and one final wait, as nccl-tests does: the mean includes
launch overhead, which is what a serving step pays. On gloo an operation returns when it is done; on NCCL it
is queued on the stream, so `sync` must be `torch.cuda.synchronize`.
`graph_time_per_op(run, ops, replays) -> seconds` (NCCL only) captures `ops` operations in one CUDA graph and
times `replays` replays of it: what a decode step's all-reduce costs once the step is a graph (no per-op launch).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist


def time_per_op(run: Callable[[], None], warmup: int, iters: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        run()
    sync()
    dist.barrier()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    sync()
    return (time.perf_counter() - start) / iters


def graph_time_per_op(run: Callable[[], None], ops: int, replays: int) -> float:
    # NCCL needs its communicator set up and a few launches outside capture before a graph can hold its kernels;
    # warming up on a side stream keeps those launches out of the default stream's history, as PyTorch's
    # CUDA-graph notes recommend.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    # thread_local: the process group's watchdog thread keeps querying CUDA events while this thread captures;
    # under the default ("global") mode such a call from another thread invalidates the capture.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for _ in range(ops):
            run()
    graph.replay()  # the first replay uploads the graph; not timed
    torch.cuda.synchronize()
    dist.barrier()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(replays):
        graph.replay()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del graph
    return elapsed / (replays * ops)
