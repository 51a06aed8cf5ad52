"""`EngineCoreClient`: the parent's side of the engine core process (`core_process.py`).

Contract:
- `spawn(engine_args, emulate_mig=None)` starts the core (`emulate_mig`: a MIG profile the core emulates, see
  `core_process.py`) (multiprocessing's *spawn* context: safe with CUDA, and the
  child imports torch, not the parent's state) and returns at once; `wait_ready()` waits while it
  builds the engine and returns its `CoreReady` (`start` = both). A core that cannot build the
  engine raises `EngineCoreLoadError` naming the original error ("ValueError: ..."); a core that
  dies while loading names its exit status. After a failed `wait_ready` the core is gone.
- `listen(on_batch, on_exit)` starts the reader thread: it blocks on the output pipe and calls
  `on_batch(message)` once per message, a `StepBatch` or (fault injection) a `FaultReply`
  (from that thread: the callee hands it to its event loop),
  then `on_exit(reason, expected)` once when the pipe closes (the core exited; `expected` is
  True after `shutdown()`).
- `send(command)` never blocks: commands queue up and a sender thread writes them, every command
  pending at that moment in one message, so a busy core never stalls the caller's event loop.
- `shutdown(timeout_s)` sends `Shutdown` and joins the core; past the timeout it kills it (the
  core ignores SIGTERM, see `core_process.py`).
  The core is a daemon child and also exits on its own when the parent dies (pipe EOF).
Torch-free: a server imports this without loading the model in its own process.
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from lab.engine.core_messages import CoreLoadFailed, CoreReady, Shutdown, StepBatch
from lab.engine.core_process import run_engine_core

logger = logging.getLogger(__name__)

READY_POLL_S = 0.5  # while loading: how often to check that the core is still alive
EXIT_WAIT_S = 5.0  # after the output pipe closed: how long to wait for the core's exit status


class EngineCoreLoadError(RuntimeError):
    """The engine core could not build the engine; the message names the original error."""


class EngineCoreClient:
    def __init__(self) -> None:
        self._process: multiprocessing.process.BaseProcess | None = None
        self._commands: Connection | None = None  # parent -> core (write end)
        self._outputs: Connection | None = None  # core -> parent (read end)
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._reader: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # ---- start-up ----------------------------------------------------------------------------------
    def start(self, engine_args, emulate_mig: str | None = None) -> CoreReady:
        self.spawn(engine_args, emulate_mig)
        return self.wait_ready()

    def spawn(self, engine_args, emulate_mig: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        commands_in, self._commands = ctx.Pipe(duplex=False)
        self._outputs, outputs_out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=run_engine_core, args=(commands_in, outputs_out, engine_args, emulate_mig),
                                    name="lab-engine-core", daemon=True)
        self._process.start()
        # Only the core holds these ends now, so its exit is an EOF here and ours is one there.
        commands_in.close()
        outputs_out.close()
        self._sender = threading.Thread(target=self._send_loop, name="engine-core-sender", daemon=True)
        self._sender.start()  # commands sent while it loads wait in the pipe

    def wait_ready(self) -> CoreReady:
        try:
            ready = self._wait_ready()
        except BaseException:
            self._stop_process(timeout_s=EXIT_WAIT_S)
            raise
        return ready

    def _wait_ready(self) -> CoreReady:
        assert self._process is not None and self._outputs is not None
        while not self._outputs.poll(READY_POLL_S):
            if not self._process.is_alive():
                break
        try:
            message = self._outputs.recv()
        except (EOFError, OSError):
            self._process.join(EXIT_WAIT_S)
            raise EngineCoreLoadError(
                f"the engine core process {_exit_status(self._process.exitcode)} while loading the model") from None
        if isinstance(message, CoreLoadFailed):
            raise EngineCoreLoadError(f"{message.error_type}: {message.message}")
        if not isinstance(message, CoreReady):
            raise EngineCoreLoadError(f"the engine core sent {type(message).__name__} instead of CoreReady")
        return message

    def listen(self, on_batch: Callable[[StepBatch], None], on_exit: Callable[[str, bool], None]) -> None:
        self._reader = threading.Thread(target=self._read_loop, args=(on_batch, on_exit),
                                        name="engine-core-reader", daemon=True)
        self._reader.start()

    # ---- commands ------------------------------------------------------------------------------------
    def send(self, command: object) -> None:
        self._pending.put(command)

    def _send_loop(self) -> None:
        assert self._commands is not None
        while True:
            batch = [self._pending.get()]
            while True:  # everything queued meanwhile travels in the same message
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commands.send(batch)
            except (OSError, ValueError):  # the core is gone (the reader reports it) or we closed
                return
            if any(isinstance(c, Shutdown) for c in batch):
                return

    # ---- outputs -------------------------------------------------------------------------------------
    def _read_loop(self, on_batch: Callable[[StepBatch], None], on_exit: Callable[[str, bool], None]) -> None:
        assert self._outputs is not None and self._process is not None
        while True:
            try:
                message = self._outputs.recv()
            except (EOFError, OSError):
                break
            try:
                on_batch(message)
            except Exception:  # a bad callback must not stop the stream of every other request
                logger.exception("engine core: handling a step batch failed")
        self._process.join(EXIT_WAIT_S)
        expected = self._stopping
        reason = f"the engine core process {_exit_status(self._process.exitcode)}"
        if not expected:
            logger.error("%s; failing its requests", reason)
        on_exit(reason, expected)

    # ---- shutdown ------------------------------------------------------------------------------------
    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._process is None or self._stopping:
            return
        self._stopping = True
        self.send(Shutdown())
        self._stop_process(timeout_s)
        if self._reader is not None:
            self._reader.join(EXIT_WAIT_S)

    def _stop_process(self, timeout_s: float) -> None:
        assert self._process is not None
        self._stopping = True
        self._process.join(timeout_s)
        if self._process.is_alive():
            logger.warning("engine core did not exit within %.1fs: terminating it", timeout_s)
            self._process.kill()  # it ignores SIGTERM (the parent owns the drain)
            self._process.join(EXIT_WAIT_S)
        if self._commands is not None:
            self._commands.close()


def _exit_status(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering (still running)"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode} (exit code {exitcode})"
    return f"exited with code {exitcode}"
