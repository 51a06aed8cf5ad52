"""The engine core process: `LLMEngine`'s step loop alone in its own process (vLLM V1's EngineCore).

Why: a server's HTTP side (parsing, one SSE event per token per request) and the step loop in one
process share one GIL, so each step waits on host work that grows with the number of streams.
Here the core only schedules, runs the model, detokenizes and checks stops; the parent serves HTTP.

Contract of `run_engine_core(commands, outputs, engine_args)` (the target of a *spawn* process,
started by `core_client.EngineCoreClient`; messages are the records of `core_messages.py`):
- Builds `LLMEngine(engine_args)`, then sends `CoreReady`, or `CoreLoadFailed` and returns. With `emulate_mig`
  (`lab serve --emulate-mig`) it first makes a green context of that MIG profile's SMs current on this thread,
  the one that loads, captures and steps (`lab.gpu.mig_emulation`), or with `--emulate-mig-with mps` sets this
  process's MPS share before any CUDA work, and sizes the engine with the profile's
  memory share as `gpu_memory_utilization`; `CoreReady.partition` then says "emulated <profile>".
- Loops: applies the pending commands between steps (adds, aborts, shutdown; at most
  `MAX_COMMAND_MESSAGES_PER_STEP` messages, so a flood cannot starve running requests); blocks on the
  command pipe while idle (in waits of at most `IDLE_POLL_S`); steps
  while there is work; and sends ONE `StepBatch` per turn that did anything, and an empty one
  when it has sent nothing for `HEARTBEAT_S` (the parent's sign that the loop still turns).
- A refused add (ValueError) is a `RequestFailure(refused=True)`; the engine is untouched. A
  request the engine ended because a step failed on it alone (`RequestOutput.error`) is a
  `RequestFailure(refused=False, alone=True)`; the rest of its batch goes on. A step that raises anyway fails
  the requests it had (aborted, `refused=False`), not the process.
- Fault commands (`ArmFault`, `ClearFaults`, `ShowFaults`; only a server started with
  `--enable-fault-injection` sends them) act on the engine through `lab.engine.faults.EngineFaults`
  between steps, each answered at once with a `FaultReply`. An injected hang holds a step in the engine's
  fault hook while this loop keeps reading the command pipe: a `ClearFaults` or `Shutdown` ends the hang,
  and every command read meanwhile is applied after the step, in order. A request failed for
  non-finite logits or CUDA out of memory is the engine's fault, not the request's: its `RequestFailure` has
  `alone=False` (`RequestOutput.error_is_request_fault`).
  Each `StepBatch`'s stats say whether the engine is degraded (`launched_step.LogitsHealth`).
- `ReloadWeights` starts a hot reload (`engine.reloader`, `lab.engine.weight_reload`): the standby loads in a
  thread while this loop steps; the switch happens between steps (the engine's own `step()` polls it; an
  idle loop polls it every `RELOAD_POLL_S`), and each outcome goes back as a `ReloadReply` with the command's
  id; a reload refused at once (a bad source, no memory, one already running) is answered at once.
- Exits on `Shutdown`, or when either pipe breaks (EOF: the parent died), with `os._exit` (status 0;
  1 if the loop itself raised): no interpreter teardown, which takes seconds on a GPU. Ignores SIGINT and
  SIGTERM: Ctrl-C or a process-group SIGTERM reaches the parent, which drains and then sends
  `Shutdown`; a core that died first would end the streams the drain waits for.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from lab.engine.core_messages import (
    HEARTBEAT_S, AbortRequest, AddRequest, ArmFault, ClearFaults, CoreLoadFailed, CoreOutput, CoreReady, CoreStats,
    FaultReply, ReloadReply, ReloadWeights, RequestFailure, ShowFaults, Shutdown, StepBatch,
)
from lab.engine.step_gaps import StepGaps

if TYPE_CHECKING:
    import threading

    from lab.engine.args import EngineArgs
    from lab.engine.engine import LLMEngine
    from lab.engine.faults import EngineFaults
    from lab.engine.launched_step import LogitsHealth
    from lab.engine.outputs import RequestOutput

logger = logging.getLogger(__name__)

IDLE_POLL_S = HEARTBEAT_S / 2  # idle: longest wait on the command pipe before looking again
RELOAD_POLL_S = 0.005  # idle while a reload loads: look at it this often, so the switch follows its load at once
MAX_COMMAND_MESSAGES_PER_STEP = 64  # a flood of commands must not starve the requests already running


def run_engine_core(commands: Connection, outputs: Connection, engine_args: EngineArgs,
                    emulate_mig=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_code = 0
    try:
        _serve(commands, outputs, engine_args, emulate_mig)
    except (EOFError, OSError):  # BrokenPipeError included: the parent is gone, nobody to serve
        pass
    except BaseException:  # a bug in the loop itself: say so; the parent fails the live requests
        logger.exception("engine core: the loop failed")
        exit_code = 1
    # Skip the interpreter's teardown: with a CUDA context and a large KV cache it takes seconds
    # (over ten on an H200), and nothing is left to save. The OS frees the memory either way.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def _serve(commands: Connection, outputs: Connection, engine_args: EngineArgs, emulate_mig) -> None:
    emulation = None  # referenced until the process exits: the green context dies with its object
    try:
        from lab.engine.engine import LLMEngine  # torch: in this process only

        if emulate_mig is not None:  # before any CUDA work of the engine, on the thread that steps
            emulation, engine_args = _emulate(emulate_mig, engine_args)
        engine = LLMEngine(engine_args)
    except Exception as exc:  # the parent says why the replica cannot serve
        logger.exception("engine core: building the engine failed")
        _send_quietly(outputs, CoreLoadFailed(type(exc).__name__, str(exc)))
        return
    checkpoint_dir = engine.checkpoint_dir
    outputs.send(CoreReady(
        max_model_len=engine.max_model_len,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        num_gpu_blocks=engine.num_blocks,
        device=str(engine.device),
        vocab_size=int(engine.model_config.vocab_size),
        weights_version=engine.weights_version,
        partition=None if emulation is None else emulation.slice.label,
    ))
    try:
        _CoreLoop(engine, commands, outputs, engine.runner.logits_health).run()
    finally:
        engine.shutdown()  # tensor parallelism: stop the workers (nothing to do on one device)


def _emulate(request, engine_args: EngineArgs):
    """`lab.gpu.mig_emulation`: the profile's SMs (a green context on this, the stepping, thread; or this
    process's MPS share, set before its CUDA context exists), and the engine's memory budget set to the profile's
    share of the card. `request`: a `MigEmulation`, or a profile name (green context)."""
    import dataclasses
    import os

    from lab.gpu.mig_emulation import MigEmulation, enter_green_context, enter_mps_share

    request = MigEmulation(request) if isinstance(request, str) else request
    if request.mechanism == "mps":
        emulation = enter_mps_share(request.profile, os.environ)  # no torch CUDA call before this line
    device = engine_args.resolve_device()
    if device.type != "cuda":
        raise ValueError(f"--emulate-mig needs a CUDA device; the engine resolved {device}")
    if request.mechanism != "mps":
        import torch

        emulation = enter_green_context(request.profile,
                                        torch.cuda.current_device() if device.index is None else device.index)
    logger.info("engine core: %s (%d SMs, %.3f of the card's memory)", emulation.slice.label,
                emulation.slice.sm_count, emulation.slice.memory_fraction)
    return emulation, dataclasses.replace(engine_args, gpu_memory_utilization=emulation.slice.memory_fraction)


class _CoreLoop:
    def __init__(self, engine: LLMEngine, commands: Connection, outputs: Connection,
                 logits_health: LogitsHealth | None = None) -> None:
        self.engine = engine
        self.health = logits_health  # what the runner saw of its logits; None: nothing to report (a fake engine)
        self.commands = commands
        self.outputs = outputs
        self.live: set[str] = set()  # admitted, not yet finished: what a failed step must fail
        self.stopping = False
        self.faults: EngineFaults | None = None  # built by the first fault command
        self._deferred: list = []  # commands read while an injected hang held a step: applied after it
        self.step_gaps = StepGaps()  # the longest gap between two steps with requests in flight (/metrics)

    def run(self) -> None:
        last_sent = time.monotonic()
        while not self.stopping:
            new: list[CoreOutput] = []
            failures: list[RequestFailure] = []
            busy = self.engine.has_unfinished_requests()
            reloading = self._reloading()
            applied = self._apply_pending(0.0 if busy else RELOAD_POLL_S if reloading else IDLE_POLL_S, new, failures)
            if self.stopping:
                return
            stepped = self.engine.has_unfinished_requests()
            if stepped:
                self._step(new, failures)
                self.step_gaps.step_ended(self.engine.has_unfinished_requests())
            elif reloading:
                self.engine.reloader.poll()  # idle: nothing else would switch it in
            applied = self._send_reload_replies() or applied
            if applied or stepped or time.monotonic() - last_sent >= HEARTBEAT_S:
                self.outputs.send(StepBatch(new, failures, self._stats()))
                last_sent = time.monotonic()

    def _apply_pending(self, timeout_s: float, new: list[CoreOutput], failures: list[RequestFailure]) -> bool:
        """Apply every command already queued (waiting up to `timeout_s` for the first)."""
        applied = False
        if self._deferred:  # read during an injected hang: they come first, in the order they came
            deferred, self._deferred = self._deferred, []
            for command in deferred:
                self._apply(command, new, failures)
            applied = True
        for _ in range(MAX_COMMAND_MESSAGES_PER_STEP):
            if self.stopping:
                break
            if not self.commands.poll(0.0 if applied else timeout_s):
                break
            for command in self.commands.recv():  # EOFError when the parent is gone
                self._apply(command, new, failures)
                applied = True
            if self.stopping:
                break
        return applied

    def _apply(self, command, new: list[CoreOutput], failures: list[RequestFailure]) -> None:
        if isinstance(command, AddRequest):
            try:
                self.engine.add_request(command.request_id, command.prompt_token_ids, command.params,
                                        priority=command.priority, deadline=command.deadline)
            except ValueError as exc:  # refused: nothing changed in the engine
                failures.append(RequestFailure(command.request_id, refused=True, message=str(exc)))
                return
            self.live.add(command.request_id)
        elif isinstance(command, AbortRequest):
            out = self.engine.abort_request(command.request_id)
            if out is not None:
                self.live.discard(command.request_id)
                new.append(_core_output(out))
        elif isinstance(command, Shutdown):
            self.stopping = True
        elif isinstance(command, (ArmFault, ClearFaults, ShowFaults)):
            self.outputs.send(self._fault_reply(command))
        elif isinstance(command, ReloadWeights):
            self._start_reload(command)
        else:
            logger.error("engine core: unknown command %r ignored", command)

    def _step(self, new: list[CoreOutput], failures: list[RequestFailure]) -> None:
        try:
            step_outputs = self.engine.step()
        except Exception as exc:  # a failed step fails its requests, not the process
            logger.exception("engine core: step failed")
            for request_id in sorted(self.live):
                try:
                    self.engine.abort_request(request_id)
                except Exception:  # the engine may be inconsistent: still report every request
                    logger.exception("engine core: abort after a failed step")
                failures.append(RequestFailure(request_id, refused=False, message=f"engine step failed: {exc!r}"))
            self.live.clear()
            return
        for out in step_outputs:
            if out.finished:
                self.live.discard(out.request_id)
            error = out.error
            if error is not None:  # the step failed on this request alone; the others went on
                # Only a request's own fault is "alone" (the server's 422, never retried); the engine's own
                # (out of memory, non-finite logits from corrupt weights) is a plain failure another replica may serve.
                failures.append(RequestFailure(out.request_id, refused=False, message=error,
                                               alone=out.error_is_request_fault))
            else:
                new.append(_core_output(out))

    def _stats(self) -> CoreStats:
        sched = self.engine.scheduler
        reloader = getattr(self.engine, "reloader", None)  # None: a test's fake engine
        gaps = self.step_gaps.snapshot()
        if reloader is None:
            return CoreStats(sched.num_running, sched.num_waiting, float(self.engine.kv_cache_usage), self._degraded(),
                             step_gaps=gaps)
        return CoreStats(sched.num_running, sched.num_waiting, float(self.engine.kv_cache_usage), self._degraded(),
                         reloader.version.label, reloader.version.generation, reloader.busy, step_gaps=gaps)

    # ---- hot reload ---------------------------------------------------------------------------------------
    def _reloading(self) -> bool:
        reloader = getattr(self.engine, "reloader", None)
        return reloader is not None and reloader.busy

    def _start_reload(self, command: ReloadWeights) -> None:
        from lab.engine.weight_standby import ReloadError

        try:
            self.engine.reloader.start(command.source, seed=command.seed, policy=command.policy,
                                       staging=command.staging, tag=command.command_id)
        except ReloadError as exc:  # refused before anything started
            self.outputs.send(ReloadReply(command.command_id, {"outcome": "refused", "error": str(exc),
                                                               "source": command.source}))

    def _send_reload_replies(self) -> bool:
        reloader = getattr(self.engine, "reloader", None)
        done = reloader.take_completed() if reloader is not None else []
        for record in done:
            self.outputs.send(ReloadReply(record.get("tag") or 0, record))
        return bool(done)

    def _degraded(self) -> str | None:
        return None if self.health is None else self.health.degraded

    # ---- fault injection ---------------------------------------------------------------------------------
    def _fault_reply(self, command: ArmFault | ClearFaults | ShowFaults) -> FaultReply:
        if self.faults is None:
            from lab.engine.faults import EngineFaults  # torch: only a core that is sent faults builds one

            self.faults = EngineFaults(self.engine, wait=self._wait_while_hung)
        record, error = None, None
        try:
            if isinstance(command, ArmFault):
                record = self.faults.arm(command.spec)
            elif isinstance(command, ClearFaults):
                record = self.faults.clear()
        except ValueError as exc:  # refused: nothing changed
            error = str(exc)
        except Exception as exc:  # a fault that failed to arm must not stop the loop that serves everyone
            logger.exception("engine core: fault command %r failed", command)
            error = f"{type(exc).__name__}: {exc}"
        return FaultReply(command.command_id, record, self.faults.armed(), self.faults.recent(), error,
                          self._degraded())

    def _wait_while_hung(self, released: threading.Event, timeout_s: float) -> bool:
        """An injected hang holds the step here, silent (no batch, no heartbeat): commands that arrive are
        kept for after the step; a `ClearFaults` or `Shutdown` among them ends the hang early (True)."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0 and not released.is_set():
            if not self.commands.poll(min(remaining, IDLE_POLL_S)):
                continue
            batch = self.commands.recv()  # EOFError when the parent is gone: the core exits
            self._deferred.extend(batch)
            if any(isinstance(command, (ClearFaults, Shutdown)) for command in batch):
                return True
        return released.is_set()


def _core_output(out: RequestOutput) -> CoreOutput:
    return CoreOutput(
        request_id=out.request_id,
        new_text=out.new_text,
        new_token_ids=out.new_token_ids,
        num_output_tokens=out.num_output_tokens,
        finish_reason=out.finish_reason if out.finished else None,
        queue_time_s=out.metrics.time_in_queue_s,
        num_preemptions=out.metrics.num_preemptions,
        new_logprobs=out.new_logprobs,
    )


def _send_quietly(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except OSError:
        pass  # the parent is gone: nobody to tell
