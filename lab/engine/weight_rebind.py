"""How a hot reload's switch rebinds the step loop to the new weights: a pointer swap, or a copy into the live tensors.

Why two ways: the live CUDA graphs baked the live weights' addresses in, so the first switch copied the standby
into the live tensors (`weight_standby.copy_into_live`): a pause that grows with the weights (26 ms for
DeepSeek-V2-Lite's 31.5 GB on an H100, the copy's floor 18.8 ms at 3.35 TB/s). The pointer swap instead captures a
second graph set over the standby module in the reload's background thread, and the switch only repoints the
engine at the standby module and its graphs (`LLMEngine.rebind_weights`): a few Python assignments, whatever the
size of the weights. An eager engine (CPU, `enforce_eager`) has no graphs: its swap is the module alone.

Contract:
- `REBINDS`: the values of `EngineArgs.reload_rebind` ("auto": the pointer swap where it can be, else the copy;
  "pointer": the swap or a refusal saying why not; "copy": always the copy, the plain path and the oracle).
- `choose_rebind(knob, staging, graphed, free_bytes, need_bytes)` -> `Rebind(mode, reason)`, decided when a
  reload starts, torch-free: the copy when the standby is staged in host memory, or when a second graph set does
  not fit beside it (`need_bytes`: the standby's weights, the live graph pool's size, measured at the startup
  capture as `LLMEngine.graph_pool_bytes`, and headroom, against `free_bytes`), with the reason in the record.
- `capture_standby_graphs(module, live_decode, live_mixed, stream)` -> `StandbyGraphs`: the live engine's graph
  kinds and buckets (`_StepGraphs.twin`), captured over `module` on `stream` from the reload's background thread,
  with their own static buffers and memory pool, beside the serving step loop (`cuda_graphs._capture_beside_serving`
  says why that is safe). Warm-ups and captures touch nothing live: the twins' cleared buffers (slot -1, seq len 0)
  write no KV and attend to nothing; the KV cache itself is shared by both graph sets (a switch keeps every
  request's KV).
- `hand_to_serving_stream(module, graphs, stream)`: the standby was allocated on the reload's side stream and the
  step loop's stream will read it; `record_stream` tells the caching allocator so, so that when this module is in
  turn retired, its blocks are not reused before that stream's queued work is done.
Releasing the retired module (after the swap, in `WeightReloader`) is then stream-ordered and safe without a sync:
the caching allocator reuses a freed block only on its allocation stream, after the events of every other stream
recorded on it (the module a previous reload handed over) or in that stream's own order (the startup weights, on
the serving stream); a retired graph pool goes back to the driver only through cudaFree, which synchronizes first;
and a retired graph still in flight "will not be terminated, but rather freed asynchronously on completion"
(cuGraphExecDestroy: https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__GRAPH.html).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lab.engine.weight_standby import ReloadError, tensor_state

REBINDS = ("auto", "pointer", "copy")
GIB = 2**30


@dataclass(frozen=True)
class Rebind:
    mode: str  # "pointer" or "copy"
    reason: str | None = None  # why the copy, when it is one


def choose_rebind(knob: str, staging: str, graphed: bool, free_bytes: int | None, need_bytes: int | None) -> Rebind:
    """The switch of one reload; a `ReloadError` when `knob` is "pointer" and the swap cannot be done."""
    if knob not in REBINDS:
        raise ReloadError(f"reload_rebind must be one of {REBINDS}, got {knob!r}")
    if knob == "copy":
        return Rebind("copy", "reload_rebind is 'copy'")
    reason = None
    if staging == "host":
        reason = "the standby is staged in host memory: the switch copies it onto the device"
    elif graphed and free_bytes is not None and need_bytes is not None and free_bytes < need_bytes:
        reason = (f"no room for a second set of CUDA graphs: the standby needs {need_bytes / GIB:.2f} GiB with its "
                  f"graphs, {free_bytes / GIB:.2f} GiB are free")
    if reason is None:
        return Rebind("pointer")
    if knob == "pointer":
        raise ReloadError(f"reload_rebind 'pointer' cannot be honoured: {reason}")
    return Rebind("copy", reason)


def reserved_bytes(device: torch.device) -> int:
    """What the caching allocator holds on `device` (0 off CUDA): its growth over the startup capture is the size a
    second graph set needs (the graphs' pool, plus any warm-up activations: an upper bound)."""
    return torch.cuda.memory_reserved(device) if device.type == "cuda" else 0


@dataclass
class StandbyGraphs:
    decode: object | None  # lab.engine.cuda_graphs.DecodeGraphs over the standby module, or None
    mixed: object | None  # lab.engine.cuda_graphs.MixedGraphs, or None
    capture_s: float


def capture_standby_graphs(module: torch.nn.Module, live_decode, live_mixed,
                           stream: torch.cuda.Stream) -> StandbyGraphs:
    """The live graph kinds and buckets over `module`, captured on `stream` into one new pool (mixed first, the larger
    activations, as at startup); raises whatever a capture raises (the caller then copies instead)."""
    start = time.perf_counter()
    with torch.cuda.stream(stream):  # the twins' static buffers are allocated where they are first written
        mixed = live_mixed.twin(module) if live_mixed is not None else None
        decode = live_decode.twin(module) if live_decode is not None else None
    pool = mixed.capture(side_stream=stream) if mixed is not None else None
    if decode is not None:
        decode.capture(pool, side_stream=stream)
    return StandbyGraphs(decode, mixed, time.perf_counter() - start)


def hand_to_serving_stream(module: torch.nn.Module, graphs: StandbyGraphs | None, stream: torch.cuda.Stream) -> None:
    tensors = list(tensor_state(module).values())
    for g in (graphs.decode, graphs.mixed) if graphs is not None else ():
        if g is not None:
            tensors += [v for v in vars(g).values() if isinstance(v, torch.Tensor)]  # its static step buffers
    for tensor in tensors:
        if tensor.is_cuda:
            tensor.record_stream(stream)
