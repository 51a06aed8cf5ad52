"""Fault injection at the engine's step boundary: what `lab serve --enable-fault-injection` arms.

`EngineFaults(engine)` arms the faults of `core_messages` (`OomFault`, `HangStepFault`, `SlowStepFault`,
`NanWeightsFault`) on one `LLMEngine`, where its steps run (the engine core process; the caller's thread in
tests). While a fault that acts per step is armed, its `before_step` is the engine's `fault_hook`, which
`LLMEngine.step()` calls first; otherwise the hook is None and a step pays one attribute check, nothing more.

Contract:
- `arm(spec) -> dict`: the record of what was armed (kind, settings, `device`, `armed_at_wall_s`,
  `armed_at_monotonic_s`; for oom the `mode` that ran). A spec the engine cannot honour raises ValueError
  naming the problem and arms nothing. Arming a kind already armed undoes the old one first (a NaN weight
  is restored before another is backed up; held memory is released before it is taken again).
- `clear() -> dict`: undoes everything: releases held memory, restores weights (then scrubs the NaN they
  left in freed KV blocks, which paged kernels may read masked), stops delays, ends a hung step.
- `armed()`, `recent()`: JSON-able records of the faults armed now and of the last `RECENT` that ended
  (`ended_by`: clear, steps, duration; a hang's `hung_s`, an oom's `steps_hit`).
- The kinds:
  oom raise: each affected step raises `torch.cuda.OutOfMemoryError` before it schedules anything, so it
    fails the requests it had (the engine core ends each with an explicit error) and leaves nothing half
    done. oom allocate (CUDA only; `auto` picks it there): allocates until the caching allocator fails
    and holds it, so the steps' own allocations really fail; released after `steps` steps (at the start of
    the next), after `duration_s`, or on clear.
  hang_step: the next step blocks for `duration_s`, or until `wait` returns early (a clear): the engine
    stops answering, as a step stuck in a kernel would. `wait(released, timeout_s) -> bool` (True: ended
    early) defaults to `released.wait`; the engine core passes one that watches its command pipe.
  slow_step: every step sleeps `delay_ms` first.
  nan_weights: fills one weight with NaN in place (CUDA graphs read the same memory), keeping a host copy;
    `launched_step.LogitsHealth` sees the non-finite logits and the engine fails those requests.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lab.engine.core_messages import FaultSpec, HangStepFault, NanWeightsFault, OomFault, SlowStepFault

if TYPE_CHECKING:
    from lab.engine.engine import LLMEngine

RECENT = 16  # ended faults kept for `recent()`
ALLOC_START_BYTES = 1 << 30  # oom allocate: first chunk size, halved each time the allocator refuses
ALLOC_MIN_BYTES = 512  # the caching allocator's smallest block: below it nothing more can be taken
ALLOC_MAX_PER_SIZE = 1 << 16  # bounds the loop at one size (a small-block pool can take many)
DEFAULT_NAN_WEIGHT = "model.layers.{layer}.self_attn.o_proj.weight"  # the attention output projection

Wait = Callable[[threading.Event, float], bool]


def _stamp(prefix: str) -> dict:
    return {f"{prefix}_wall_s": time.time(), f"{prefix}_monotonic_s": time.monotonic()}


class _Fault:
    """One armed fault: `before_step` says whether it stays armed; `undo` returns what it undid."""

    needs_hook = True  # acts on every step (nan_weights does not: the weights act by themselves)
    ended_by = "steps"  # why it ends when `before_step` says it is done

    def __init__(self, kind: str, device: dict, settings: dict) -> None:
        self.record = {"kind": kind, **settings, **device, **_stamp("armed_at")}
        self.ended: dict | None = None  # its last record, once ended

    def before_step(self, now: float) -> bool:
        return True

    def expired(self, now: float) -> bool:
        return False

    def undo(self) -> dict:
        return {}


class _Oom(_Fault):
    def __init__(self, spec: OomFault, device: torch.device, info: dict) -> None:
        mode = spec.mode if spec.mode != "auto" else ("allocate" if device.type == "cuda" else "raise")
        if mode == "allocate" and device.type != "cuda":
            raise ValueError(f"oom mode 'allocate' needs a CUDA device; this engine runs on {device}: use mode 'raise'")
        steps = spec.steps if spec.steps is not None or spec.duration_s is not None else 1
        super().__init__("oom", info, {"mode": mode, "steps": steps, "duration_s": spec.duration_s})
        self.mode, self.steps_left = mode, steps
        self.budget = f"of {steps}" if steps is not None else f"within {spec.duration_s:g} s"
        self.deadline = None if spec.duration_s is None else time.monotonic() + spec.duration_s
        self.steps_hit = 0
        self.held: list[torch.Tensor] = []
        if mode == "allocate":
            self.held, held_bytes = _hold_free_cuda_memory(device)
            self.record.update(held_bytes=held_bytes, free_bytes_after=torch.cuda.mem_get_info(device)[0])

    def expired(self, now: float) -> bool:
        return (self.deadline is not None and now >= self.deadline) or self.steps_left == 0

    def before_step(self, now: float) -> bool:
        self.steps_hit += 1
        if self.steps_left is not None:
            self.steps_left -= 1
        if self.mode == "raise":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by lab fault injection: oom mode "
                                              f"raise, failed step {self.steps_hit} {self.budget})")
        return True  # allocate: the memory stays held through this step; released once expired

    def undo(self) -> dict:
        self.held.clear()
        if self.mode == "allocate":
            torch.cuda.empty_cache()  # give the hoard back to the driver: the engine is as before the fault
        return {"steps_hit": self.steps_hit}


class _Hang(_Fault):
    def __init__(self, spec: HangStepFault, info: dict, wait: Wait) -> None:
        super().__init__("hang_step", info, {"duration_s": spec.duration_s})
        self.duration_s, self.wait = spec.duration_s, wait
        self.released = threading.Event()
        self.hung_s: float | None = None

    def before_step(self, now: float) -> bool:
        self.record.update(_stamp("hung_at"))
        early = self.wait(self.released, self.duration_s)
        self.hung_s = time.monotonic() - now
        self.record["hung_s"] = self.hung_s
        self.ended_by = "clear" if early else "duration"
        return False  # one step only

    def undo(self) -> dict:
        self.released.set()  # a step hung on another thread (in-process use) goes on
        return {"hung_s": self.hung_s}


class _Slow(_Fault):
    def __init__(self, spec: SlowStepFault, info: dict) -> None:
        super().__init__("slow_step", info, {"delay_ms": spec.delay_ms})
        self.delay_s = spec.delay_ms / 1000.0
        self.steps_hit = 0

    def before_step(self, now: float) -> bool:
        self.steps_hit += 1
        time.sleep(self.delay_s)
        return True

    def undo(self) -> dict:
        return {"steps_hit": self.steps_hit}


class _NanWeight(_Fault):
    needs_hook = False

    def __init__(self, spec: NanWeightsFault, engine: LLMEngine, info: dict) -> None:
        name = spec.weight if spec.weight is not None else DEFAULT_NAN_WEIGHT.format(layer=spec.layer)
        tensor = _named_tensor(engine.model, name)
        if not tensor.is_floating_point():
            raise ValueError(f"weight {name!r} is {tensor.dtype}: NaN needs a floating-point tensor")
        super().__init__("nan_weights", info, {"weight": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)})
        self.engine, self.tensor = engine, tensor
        self.backup = tensor.detach().to("cpu", copy=True)  # on the host: a big layer must not cost device memory
        with torch.inference_mode():
            tensor.fill_(float("nan"))

    def undo(self) -> dict:
        with torch.inference_mode():
            self.tensor.copy_(self.backup)
            scrubbed = _scrub_kv_cache(self.engine.runner.kv_caches)
        self.engine.runner.logits_health.reset()  # the next steps judge the restored weights afresh
        return {"kv_cache_scrubbed": scrubbed}


class EngineFaults:
    def __init__(self, engine: LLMEngine, wait: Wait | None = None) -> None:
        self.engine = engine
        self._wait: Wait = wait or (lambda released, timeout_s: released.wait(timeout_s))
        self._armed: dict[str, _Fault] = {}
        self._recent: deque[dict] = deque(maxlen=RECENT)
        self._lock = threading.RLock()  # arm/clear may come from another thread than the steps (in-process use)
        self._device = _device_info(engine.device)

    def arm(self, spec: FaultSpec) -> dict:
        with self._lock:
            kind = _KINDS.get(type(spec))
            if kind is None:
                raise ValueError(f"unknown fault {spec!r}")
            if kind in self._armed:
                self._end(self._armed[kind], "rearmed")
            fault = self._build(spec)  # may raise: nothing armed, nothing changed
            self._armed[kind] = fault
            self._install()
            return {"action": "arm", **fault.record}

    def clear(self) -> dict:
        with self._lock:
            ended = [self._end(fault, "clear") for fault in list(self._armed.values())]
            self._install()
            return {"action": "clear", "cleared": ended, **self._device, **_stamp("at")}

    def armed(self) -> list[dict]:
        with self._lock:
            self._expire(time.monotonic())
            return [dict(fault.record) for fault in self._armed.values()]

    def recent(self) -> list[dict]:
        return list(self._recent)

    def before_step(self) -> None:
        """The engine's `fault_hook` while a per-step fault is armed: may sleep, block or raise."""
        now = time.monotonic()
        self._expire(now)
        for fault in list(self._armed.values()):  # a dict keeps arming order
            try:
                keep = fault.before_step(now)
            except BaseException:
                if fault.expired(time.monotonic()):
                    self._end(fault, "steps")
                raise
            if not keep:
                self._end(fault, fault.ended_by)

    def _build(self, spec: FaultSpec) -> _Fault:
        if isinstance(spec, OomFault):
            return _Oom(spec, self.engine.device, self._device)
        if isinstance(spec, HangStepFault):
            return _Hang(spec, self._device, self._wait)
        if isinstance(spec, SlowStepFault):
            return _Slow(spec, self._device)
        return _NanWeight(spec, self.engine, self._device)

    def _expire(self, now: float) -> None:
        for fault in [f for f in self._armed.values() if f.expired(now)]:
            self._end(fault, "duration" if fault.record.get("duration_s") else "steps")

    def _end(self, fault: _Fault, ended_by: str) -> dict:
        with self._lock:
            if fault.ended is not None:  # a clear and the hung step it released both end a hang
                return fault.ended
            if self._armed.get(fault.record["kind"]) is fault:
                del self._armed[fault.record["kind"]]
            fault.ended = {**fault.record, **fault.undo(), "ended_by": ended_by, **_stamp("ended_at")}
            self._recent.append(fault.ended)
            self._install()
            return fault.ended

    def _install(self) -> None:
        # The only thing a step ever reads of this module: None when no armed fault acts per step.
        hooked = any(fault.needs_hook for fault in self._armed.values())
        self.engine.fault_hook = self.before_step if hooked else None


_KINDS = {OomFault: "oom", HangStepFault: "hang_step", SlowStepFault: "slow_step", NanWeightsFault: "nan_weights"}


def _device_info(device: torch.device) -> dict:
    info = {"device": str(device)}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def _named_tensor(model: torch.nn.Module, name: str) -> torch.Tensor:
    named = dict(model.named_parameters())
    named.update(model.named_buffers())
    if name not in named:
        hint = [n for n in named if n.endswith("o_proj.weight")][:3] or list(named)[:3]
        raise ValueError(f"the model has no weight named {name!r} ({len(named)} weights, e.g. {', '.join(hint)})")
    return named[name]


def _hold_free_cuda_memory(device: torch.device) -> tuple[list[torch.Tensor], int]:
    """Allocate until the caching allocator refuses, halving the chunk down to its smallest block."""
    held: list[torch.Tensor] = []
    total, size = 0, ALLOC_START_BYTES
    while size >= ALLOC_MIN_BYTES:
        for _ in range(ALLOC_MAX_PER_SIZE):
            try:
                held.append(torch.empty(size, dtype=torch.uint8, device=device))
            except torch.cuda.OutOfMemoryError:
                break
            total += size
        size //= 2
    return held, total


def _scrub_kv_cache(kv_caches: list[tuple[torch.Tensor, ...]]) -> bool:
    """Zero the non-finite values a NaN weight left in the cache. Only freed blocks hold them (every
    request that computed with the NaN weight was failed), so live requests' values are untouched."""
    for layer in kv_caches:
        for cache in layer:
            if cache.dtype not in (torch.float16, torch.bfloat16, torch.float32):
                return False  # e.g. an fp8 cache: nan_to_num has no kernel for it
            torch.nan_to_num_(cache, nan=0.0, posinf=0.0, neginf=0.0)
    return True
