"""`TensorParallel`: one rank's view of its tensor-parallel group; every collective of a step goes through it.

Contract: the parallel layers (`parallel/layers.py`) hold a reference to this object, handed to them when the
model is sharded (no module global to look it up by), and call
  all_reduce(x)          sum over ranks, in place, returns x           (row-parallel outputs, vocab embedding)
  all_gather_last(x)     (..., n) per rank -> (..., n * size), rank order (the vocab-parallel logits)
The runner calls
  send_step(step) / recv_step()   the leader's host-side step record to every worker (CPU group, pickled)
  broadcast(x)                    a device tensor from the leader (a step's chained input ids)
and the engine `min_int(n)` (the KV block count every rank can hold).

The group is torch.distributed's default group (`launch.py` makes it), so one process leads at most one
tensor-parallel engine at a time; `shutdown()` leaves it for the next.

Why two groups: the model's collectives run on `group` (nccl on CUDA, gloo on CPU); the step records are
Python objects, which travel on `cpu_group` (gloo) so that the leader never waits on the GPU to send one
(`broadcast_object_list` over nccl would copy them through device memory and sync). On CPU both are one group.

CUDA graphs: a synchronous (`async_op=False`) nccl collective is launched on the current stream in recent
PyTorch (pytorch/pytorch#147729; older releases launch it on NCCL's own stream joined to the current one by
events, which a capture records as well), with no host sync, so the all-reduces of a decode step are captured
into its graph like any kernel. The communicator is created when the group is
(`launch.join_group` passes `device_id`), since creating it lazily inside a capture fails. This must be checked
on a machine with 2+ GPUs (`tests/engine/test_tensor_parallel_gpu.py`); here it is tested on CPU with gloo only.

`timer` (a `CollectiveTimer`, None unless a benchmark asks) times each collective with a host clock on CPU and
CUDA events on GPU. It sees only eager steps: a CUDA graph replays its collectives where no Python runs.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


class CollectiveTimer:
    """Time and count the collectives of the steps between `reset()` and `collect()` (a benchmark's, eager)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, int] = {}
        self._host_s = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def run(self, name: str, fn, *args):
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args)
            end.record()
            self._events.append((start, end))
            return out
        start_s = time.perf_counter()
        out = fn(*args)
        self._host_s += time.perf_counter() - start_s
        return out

    def collect(self) -> float:
        """Seconds spent in the collectives since `reset()` (syncs the device once)."""
        if self._events:
            self._events[-1][1].synchronize()
            return self._host_s + sum(s.elapsed_time(e) for s, e in self._events) / 1e3
        return self._host_s


@dataclass
class TensorParallel:
    rank: int
    size: int
    device: torch.device  # this rank's device
    group: object = None  # torch.distributed ProcessGroup of the model's collectives
    cpu_group: object = None  # gloo group of the step records (the same group on CPU)
    timer: CollectiveTimer | None = None
    workers: list = field(default_factory=list)  # the leader's worker processes (launch.py); empty on workers
    broken: str | None = None  # why the ranks may be out of step (a step failed on the leader after it was sent)
    threads_before: int | None = None  # the leader's torch threads before a CPU group took its share (launch.py)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # ---- the model's collectives ---------------------------------------------------------------
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.timer is not None:
            return self.timer.run("all_reduce", self._all_reduce, x)
        return self._all_reduce(x)

    def _all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, group=self.group)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        if self.timer is not None:
            return self.timer.run("all_gather", self._all_gather_last, x)
        return self._all_gather_last(x)

    def _all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = x.new_empty(self.size * x.shape[0], *x.shape[1:])  # gathered along dim 0, rank after rank
        _all_gather_single(out, x, self.group)
        # (size, N, n) -> (N, size, n) -> (N, size * n): rank r's columns land at [r*n, (r+1)*n)
        return out.view(self.size, *x.shape).movedim(0, -2).reshape(*x.shape[:-1], -1)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """x from the leader, in place on every rank."""
        dist.broadcast(x, src=0, group=self.group)
        return x

    # ---- control: step records, agreement ------------------------------------------------------
    def send_step(self, step) -> None:
        if self.broken is not None:
            raise RuntimeError(f"tensor-parallel ranks may be out of step: {self.broken}; restart the engine")
        dist.broadcast_object_list([step], src=0, group=self.cpu_group)

    def recv_step(self):
        """The leader's next step record (None: stop)."""
        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def min_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.cpu_group)
        return int(t.item())

    def mark_broken(self, error: BaseException) -> None:
        """Rank 0 failed where the workers may wait in a collective it never reaches (a step after its record
        went out, or the engine's construction): no further step is sent (every later one fails naming this),
        and `shutdown` ends the workers without a word."""
        self.broken = f"rank 0 failed while the workers were in step ({type(error).__name__}: {error})"

    def shutdown(self) -> None:
        """Leader: tell the workers to stop, wait for them (killing what does not stop), leave the group.
        Safe to call twice, and at exit (launch.py registers it)."""
        if self.group is None:
            return
        if self.is_leader:
            try:
                if self.broken is None:  # else a worker may sit in a collective: closing its stdin ends it
                    dist.broadcast_object_list([None], src=0, group=self.cpu_group)
            except Exception as exc:  # a worker already gone: nothing to tell it
                logger.warning("tensor parallel: could not tell the workers to stop (%r); ending them", exc)
            finally:
                import atexit

                from lab.engine.parallel.launch import stop_workers

                stop_workers(self.workers)
                atexit.unregister(self.shutdown)
        dist.destroy_process_group()
        self.group = self.cpu_group = None
        if self.threads_before is not None:
            torch.set_num_threads(self.threads_before)


def _all_gather_single(out: torch.Tensor, x: torch.Tensor, group) -> None:
    # torch >= 2.10 names it all_gather_single and deprecates all_gather_into_tensor (same semantics)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x, group=group)
