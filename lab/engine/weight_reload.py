"""Hot reload with double buffering: `LLMEngine.update_weights` and what the engine core drives.

Contract: `WeightReloader(engine)` owns the engine's weight version (`version`: a label such as
"r1-distill-qwen-1.5b@seed0" or a checkpoint path, and a `generation` counting reloads) and at most one
reload at a time.
- `start(source, seed=None, policy="switch", staging="auto", tag=None, background=True)` checks its
  arguments and the memory at once (a `ReloadError` says why and nothing starts), then builds the standby
  weights (`lab.engine.weight_standby`: read, validated, probed) in a background thread (on CUDA, on a
  side stream) while the step loop keeps serving. `background=False` does all of it in the caller.
- `poll()` is called between steps (first thing in `LLMEngine.step`, and by an idle engine core). When the
  standby is ready it acts, by policy:
  switch: every running request continues on the new weights from the next step, its KV kept.
  drain: new requests are admitted on the new generation and run on the standby module (on its own graph set
    when it has one, else eager) while requests admitted before finish on the live weights; when none is left,
    or after `drain_timeout_s` (the rest then continue on the new weights), the standby is switched in.
  A standby that failed to build, validate or probe is dropped: the live weights never changed.
- Rebind (`lab.engine.weight_rebind`, decided at `start` from `EngineArgs.reload_rebind`, the staging and the
  memory): `pointer`: the background half also captures a graph set over the standby (graph engines), and the
  switch repoints the engine at the standby module and its graphs (`LLMEngine.rebind_weights`); the retired
  module, its weights and its graph pool are released right there. `copy`: the switch copies the standby into
  the live tensors in place (the live graphs keep their addresses) and frees it; a standby whose graph capture
  failed falls back to it. The record says which (`rebind`, and `rebind_reason` for a copy).
- Staging: `device` builds the standby on the live device (needs room for a second copy: checked before
  starting against the free memory); `host` builds it in pinned host memory, checks and probes it on the
  CPU, and the switch is a host-to-device copy (a longer pause, in the record); `auto` takes the device when
  it fits. `drain` needs both versions on the device.
- Records (JSON-able dicts, also kept in `history`) come out of `take_completed()`: outcome `switched`,
  `draining` (new requests now on the new weights), `promoted` (a drain ended), or `refused` with `error`;
  with the version, timings (`read_s`, `validate_s`, `probe_s`, `graphs_capture_s`; `switch_host_ms`: issuing
  the copies, or the pointer swap's assignments; `switch_copy_ms` (copy): the device's copy time; `release_ms`
  (pointer): dropping the retired module and graphs; `pause_ms`: the step loop's stall at the switch), the
  probe's token, staging, rebind, and `tag`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lab.engine.presets import PRESETS
from lab.engine.weight_quant import weight_format_of
from lab.engine.weight_rebind import (
    Rebind, StandbyGraphs, capture_standby_graphs, choose_rebind, hand_to_serving_stream,
)
from lab.engine.weight_standby import (
    ReloadError, build_standby, check_standby, copy_into_live, probe_standby, source_config, tensor_state,
)

if TYPE_CHECKING:
    from lab.engine.engine import LLMEngine

logger = logging.getLogger(__name__)
POLICIES = ("switch", "drain")
STAGINGS = ("auto", "device", "host")
HEADROOM_BYTES = 512 << 20  # left free beside a device standby: the steps' activations still need room
DRAIN_TIMEOUT_S = 120.0
HISTORY = 32


@dataclass(frozen=True)
class WeightsVersion:
    label: str
    generation: int


def reloadable_bytes(device: torch.device) -> int:
    """Bytes a standby can take: the driver's free memory plus what the caching allocator holds unused (a
    previous standby's blocks, kept to spare the step loop an empty_cache; the allocator frees them on demand)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def source_label(source: str, seed: int) -> str:
    return f"{source}@seed{seed}" if source in PRESETS else str(Path(source).resolve())


class _Job:
    """One reload's background half: build, check and probe the standby (and, for a pointer switch of a graph
    engine, capture its graph set); never touches live tensors."""

    def __init__(self, engine: LLMEngine, source: str, seed: int, policy: str, staging: str, tag, rebind: Rebind,
                 stream: torch.cuda.Stream | None = None, serving_stream: torch.cuda.Stream | None = None) -> None:
        self.engine, self.source, self.seed, self.policy, self.staging, self.tag = engine, source, seed, policy, staging, tag
        self.rebind = rebind  # may turn to a copy here, if capturing the standby's graphs fails
        self.stream, self.serving_stream = stream, serving_stream
        self.record: dict = {"source": source, "seed": seed if source in PRESETS else None, "policy": policy,
                             "staging": staging, "tag": tag, "started_at": time.time()}
        self.module = None
        self.graphs: StandbyGraphs | None = None  # pointer rebind of a graph engine: captured over `module`
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # copy rebind: (live, standby) tensors
        self.phase = "build"  # build, probe, capture, done: what the background half is doing
        self.error: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._build()  # its locals (the live tensors' list among them) are gone before `done` is set
        except ReloadError as exc:
            self.error = str(exc)
        except Exception as exc:  # a reload must never take the serving replica down with it
            logger.exception("weight reload from %s failed", self.source)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.phase = "done"
            self.done.set()

    def _build(self) -> None:
        engine = self.engine
        live_device = engine.device
        staging_device = torch.device("cpu") if self.staging == "host" else live_device
        stream = self.stream
        with torch.cuda.stream(stream) if stream is not None else _nothing():
            t0 = time.perf_counter()
            module = build_standby(self.source, self.seed, engine.model_config, engine.dtype, live_device,
                                   staging_device, engine.args.hf_overrides or None,
                                   weight_format_of(engine.model), engine.args.load_format)
            t1 = time.perf_counter()
            live, new = tensor_state(engine.model), tensor_state(module)
            check_standby(live, new)
            t2 = time.perf_counter()
            self.phase = "probe"
            on_host = staging_device.type != live_device.type
            _set_backends(module, engine, staging_device if on_host else live_device)
            token = probe_standby(module, engine.dtype, staging_device, engine.args.block_size,
                                  "reference" if on_host else engine.attention_backend, engine.eos_token_id)
            if stream is not None:
                stream.synchronize()
            t3 = time.perf_counter()
        if self.rebind.mode == "pointer":
            self._prepare_pointer(module)
        self.module = module
        if self.rebind.mode == "copy":
            self.pairs = [(live[name], new[name]) for name in sorted(live)]
        self.record.update(read_s=t1 - t0, validate_s=t2 - t1, probe_s=t3 - t2, probe_token=token,
                           bytes=sum(t.numel() * t.element_size() for t in new.values()), rebind=self.rebind.mode,
                           **({"rebind_reason": self.rebind.reason} if self.rebind.reason else {}))

    def _prepare_pointer(self, module) -> None:
        """A graph engine's standby gets its own graph set (else the switch copies); then the step loop's stream
        is told it will read the standby (`weight_rebind.hand_to_serving_stream`)."""
        engine = self.engine
        if engine.graphs is not None or engine.mixed_graphs is not None:
            self.phase = "capture"
            try:
                self.graphs = capture_standby_graphs(module, engine.graphs, engine.mixed_graphs, self.stream)
            except Exception as exc:  # the copy needs no graphs of its own: the reload still goes through
                logger.warning("capturing CUDA graphs over the new weights failed; the switch copies them instead",
                               exc_info=True)
                self.rebind = Rebind("copy", f"capturing CUDA graphs over the new weights failed "
                                             f"({type(exc).__name__}: {exc})")
                return
            self.record["graphs_capture_s"] = self.graphs.capture_s
        if self.serving_stream is not None:
            hand_to_serving_stream(module, self.graphs, self.serving_stream)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _set_backends(module, engine: LLMEngine, device: torch.device) -> None:
    from lab.engine.models.layers import set_fused_ops
    from lab.engine.models.moe import set_moe_backend

    set_moe_backend(module, engine.args.resolve_moe_backend(device))
    set_fused_ops(module, engine.args.use_fused_ops(device))


class WeightReloader:
    def __init__(self, engine: LLMEngine, label: str, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self.engine = engine
        self.version = WeightsVersion(label, 0)
        self.admission_generation = 0  # what a request admitted now runs on
        self.drain_timeout_s = drain_timeout_s
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._job: _Job | None = None
        self._drain: tuple[_Job, float] | None = None  # the job whose standby serves new requests, since when
        self._completed: list[dict] = []
        # One side stream for every standby: the caching allocator reuses a freed block only on the stream that
        # allocated it, so a new stream per reload left each old standby's memory cached but unusable (on an
        # H200, DeepSeek-V2-Lite's third reload found no room and a drain was refused with 7 GiB free).
        self._stream = torch.cuda.Stream(engine.device) if engine.device.type == "cuda" else None
        # The stream the step loop launches on (built on the thread that steps): a pointer switch hands it the standby.
        self._serving_stream = torch.cuda.current_stream(engine.device) if engine.device.type == "cuda" else None

    @property
    def busy(self) -> bool:
        return self._job is not None or self._drain is not None

    def start(self, source: str, seed: int | None = None, policy: str = "switch", staging: str = "auto",
              tag=None, background: bool = True) -> None:
        source = str(source)
        if policy not in POLICIES:
            raise ReloadError(f"policy must be one of {POLICIES}, got {policy!r}")
        if staging not in STAGINGS:
            raise ReloadError(f"staging must be one of {STAGINGS}, got {staging!r}")
        if getattr(self.engine, "parallel", None) is not None:
            raise ReloadError("hot reload is not supported with tensor_parallel_size > 1 yet: every rank would have "
                              "to load, check and switch its shard in the same step")
        if self.busy:
            raise ReloadError(f"a reload is already in progress (to generation {self.version.generation + 1}); "
                              "wait for it to finish")
        source_config(source, self.engine.args.hf_overrides or None)  # a bad source is refused here, at once
        staging = self._resolve_staging(staging, policy)
        rebind = self._resolve_rebind(staging)
        seed = self.engine.args.seed if seed is None else int(seed)
        self._job = _Job(self.engine, source, seed, policy, staging, tag, rebind, self._stream, self._serving_stream)
        if background:
            threading.Thread(target=self._job.run, name="weight-reload", daemon=True).start()
        else:
            self._job.run()
            self.poll()

    def _resolve_staging(self, staging: str, policy: str) -> str:
        device = self.engine.device
        if device.type != "cuda":
            return "device"  # the host is the device: nothing to stage through
        need = self._weight_bytes() + HEADROOM_BYTES
        free = reloadable_bytes(device)
        fits = free >= need
        if policy == "drain" and not fits:
            raise ReloadError(f"drain keeps both versions on the device: it needs {need / 2**30:.2f} GiB free, "
                              f"{free / 2**30:.2f} GiB are (use policy 'switch' with staging 'host', or a lower "
                              "--gpu-memory-utilization)")
        if staging == "device" and not fits:
            raise ReloadError(f"staging 'device' needs {need / 2**30:.2f} GiB free on {device} for the standby "
                              f"weights, {free / 2**30:.2f} GiB are; staging 'host' copies through pinned host "
                              "memory instead (a longer pause)")
        if staging == "auto":
            return "device" if fits else "host"
        if policy == "drain" and staging == "host":
            raise ReloadError("drain runs new requests on the standby weights: they must be on the device "
                              "(staging 'device' or 'auto')")
        return staging

    def _weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in tensor_state(self.engine.model).values())

    def _resolve_rebind(self, staging: str) -> Rebind:
        """Pointer where it can be (a graph engine needs room for a second graph set beside the standby), else copy."""
        engine = self.engine
        graphed = engine.graphs is not None or engine.mixed_graphs is not None
        free = need = None
        if graphed and staging == "device":
            need = self._weight_bytes() + engine.graph_pool_bytes + HEADROOM_BYTES
            free = reloadable_bytes(engine.device)
        return choose_rebind(engine.args.reload_rebind, staging, graphed, free, need)

    def poll(self) -> None:
        """Between steps: act on a standby that became ready, or end a drain that is over."""
        job = self._job
        if job is not None and job.done.is_set():
            self._job = None
            if job.error is not None:
                self._finish(job, "refused", error=job.error)
            elif job.policy == "switch":
                self._switch_in(job, "switched")
            else:
                self.admission_generation = self.version.generation + 1
                graphs = job.graphs
                self.engine.runner.begin_drain(job.module, self.admission_generation,
                                               *((graphs.decode, graphs.mixed) if graphs is not None else ()))
                self._drain = (job, time.monotonic())
                self._finish(job, "draining")
        if self._drain is not None:
            job, since = self._drain
            old = [s for s in self.engine.scheduler.running + self.engine.scheduler.waiting
                   if s.weights_generation != self.admission_generation]
            timed_out = time.monotonic() - since >= self.drain_timeout_s
            if not old or timed_out:
                self._drain = None
                job.record["drained_s"] = time.monotonic() - since
                job.record["switched_midway"] = len(old)  # still unfinished at the timeout: continue on the new
                self.engine.runner.end_drain()
                self._switch_in(job, "promoted")

    def _switch_in(self, job: _Job, outcome: str) -> None:
        if job.rebind.mode == "pointer":
            timings = self._swap_in(job)
        else:
            host_ms, copy_ms, pause_ms = copy_into_live(job.pairs, self.engine.device)
            timings = dict(switch_host_ms=host_ms, switch_copy_ms=copy_ms, pause_ms=pause_ms)
        self.engine.runner.logits_health.reset()  # a NaN the old weights showed says nothing of these
        # Freed memory (the copied standby, or the retired module and graph pool) stays in the caching allocator for
        # the next reload's standby: returning it to the driver (empty_cache) stalled the step loop ~100 ms after a
        # switch on an H100 (05's ITL around reloads).
        job.module, job.pairs, job.graphs = None, [], None
        generation = self.version.generation + 1
        self.version = WeightsVersion(source_label(job.source, job.seed), generation)
        self.admission_generation = generation
        for seq in self.engine.scheduler.running + self.engine.scheduler.waiting:
            seq.weights_generation = generation  # all on the live weights, which are now these
        self._finish(job, outcome, **timings)

    def _swap_in(self, job: _Job) -> dict:
        """The pointer switch: the engine now runs the standby module and its graphs; the retired ones are dropped
        here, after the assignments (stream-ordered frees: `lab.engine.weight_rebind` says why no sync is needed)."""
        engine, graphs = self.engine, job.graphs
        retired = (engine.model, engine.graphs, engine.mixed_graphs)
        start = time.perf_counter()
        engine.rebind_weights(job.module, *((graphs.decode, graphs.mixed) if graphs is not None else (None, None)))
        swapped = time.perf_counter()
        job.module, job.graphs = None, None
        del retired, graphs  # the last references: the old weights, graphs and their pool go back to the allocator
        released = time.perf_counter()
        host_ms, release_ms = 1000.0 * (swapped - start), 1000.0 * (released - swapped)
        return dict(switch_host_ms=host_ms, release_ms=release_ms, pause_ms=host_ms + release_ms)

    def _finish(self, job: _Job, outcome: str, **fields) -> None:
        record = {**job.record, **fields, "outcome": outcome, "at": time.time(),
                  "version": self.version.label, "generation": self.version.generation}
        if outcome == "draining":
            record["generation"] = self.admission_generation
            record["version"] = source_label(job.source, job.seed)
        self.history.append(record)
        self._completed.append(record)
        logger.info("weight reload %s: %s", outcome, {k: v for k, v in record.items() if k != "tag"})

    def take_completed(self) -> list[dict]:
        done, self._completed = self._completed, []
        return done

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the background half is done (the offline API's `update_weights`); True if it is."""
        job = self._job
        return True if job is None else job.done.wait(timeout_s)
