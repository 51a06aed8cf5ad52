"""Mean seconds of one call of a component, timed alone: CUDA graph replays between CUDA events, or wall time.

Contract: `time_call(fn, device, repeats, warmup, graph)` runs `fn()` `warmup` times, then times `repeats` calls
and returns the mean seconds of one. On CUDA with `graph` the call is captured once into a CUDA graph and the
replays are timed between two CUDA events, as the engine's decode steps run (graphs, no launch gaps); if the
capture fails (a path that syncs with the host) it falls back to eager calls and says so in `TimedCall.graph`.
On CUDA without `graph`, eager calls between events (prefill: the engine runs it eagerly). On a CPU, wall time.
A component timed alone keeps its small weights (the router's 7 MB) in the L2 cache between calls, which a real
step's other components would evict: the router's time is a slight underestimate at small batches.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimedCall:
    seconds: float  # mean of one call
    graph: bool  # timed as CUDA graph replays


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int, graph: bool) -> TimedCall:
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if device.type != "cuda":
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            return TimedCall((time.perf_counter() - start) / repeats, False)
        captured = None
        if graph:
            torch.cuda.synchronize(device)
            try:
                captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(captured):
                    fn()
            except RuntimeError:  # a host sync inside: time it eagerly instead
                captured = None
                torch.cuda.synchronize(device)
        run = captured.replay if captured is not None else fn
        run()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(repeats):
            run()
        end.record()
        end.synchronize()
        seconds = begin.elapsed_time(end) / 1e3 / repeats
        del captured
        return TimedCall(seconds, graph and run is not fn)
