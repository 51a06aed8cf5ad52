"""`serve(config)`: run one replica under uvicorn, with a graceful drain on SIGTERM.

Contract:
- Binds `config.host:config.port` at once and loads the model in the background (`app.py`).
- SIGTERM (or a first Ctrl-C): the replica stops admitting (503 on new generation requests and
  on `/ready`) but keeps its socket open so callers get an explicit 503 rather than a refused
  connection; in-flight requests run to the end for up to `config.drain_timeout_s`, then what is
  left is aborted (streams end with a finish_reason), uvicorn closes the connections, the engine
  stops, and `serve` returns 0. A second signal exits at once.
- Returns 1 when the model failed to load (the error is logged), so a pool can tell.
- `max_request_bytes` caps a request body (413 past it); `engine_iteration_timeout_s` is how long
  the engine's step loop may stay silent before `/health`, `/ready` and new requests answer 503.
- `config.engine` picks the backend: "lab" (our engine), "hf" (the transformers `generate()`
  baseline, `HFBackend`, in static batches of `hf_batch_size`) or "hf-cb" (transformers' continuous
  batching manager, `HFCBBackend`, sized by `hf_cb`: the native deployment). For "lab", `config.engine_core`
  picks where its step loop runs: "process" (the default, `EngineCoreBackend`: the engine core in
  its own process, so HTTP work and steps do not share a GIL, as in vLLM V1) or "thread"
  (`AsyncLLMBackend`: a thread of this process; the plain path and the reference).
- `emulate_mig` (`--emulate-mig PROFILE`, engine "lab" with its core process only) holds the engine core to
  the profile's SMs and memory share (`lab.gpu.mig_emulation`; `emulate_mig_with`: a green context, or the
  process's MPS share, `lab.gpu.mps`); a replica on a MIG device (LAB_MIG_PROFILE or
  CUDA_VISIBLE_DEVICES=MIG-...) says "MIG <profile>". Either label is in /v1/models and /metrics.
uvicorn's own SIGTERM handling would stop listening immediately and re-raise the signal after
shutdown (exit status -15); `DrainingServer.handle_exit` replaces it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from lab.gpu.mig_emulation import MigEmulation, partition_label
from lab.server.app import build_app
from lab.server.backend import ServingBackend
from lab.server.core_backend import EngineCoreBackend
from lab.server.engine_backend import AsyncLLMBackend
from lab.server.faults import AdminKey, FaultInjection
from lab.server.hf_cb_config import HFCBConfig
from lab.server.lifecycle import Lifecycle, State
from lab.server.limits import DEFAULT_MAX_REQUEST_BYTES, ENGINE_ITERATION_TIMEOUT_S

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs

logger = logging.getLogger(__name__)

SHUTDOWN_BACKSTOP_S = 5.0  # after the drain: how long uvicorn may wait for connections to close
# lab: our engine (full power); hf: transformers generate() in static batches (the floor);
# hf-cb: transformers' continuous batching manager (the native deployment)
ENGINES = ("lab", "hf", "hf-cb")
ENGINE_CORES = ("process", "thread")  # engine "lab": step loop in its own process (default) or a thread here


@dataclass(frozen=True)
class ServerConfig:
    engine_args: EngineArgs
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    log_level: str = "info"
    access_log: bool = False  # one log line per request: off by default, it costs at high rates
    engine: str = "lab"  # which backend serves: see ENGINES
    hf_batch_size: int = 1  # engine "hf": requests per static generate() batch (1 = one request at a time)
    hf_cb: HFCBConfig = HFCBConfig()  # engine "hf-cb": the manager's sizes (None fields: transformers' defaults)
    engine_core: str = "process"  # engine "lab": where the step loop runs, see ENGINE_CORES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # larger bodies get a 413
    engine_iteration_timeout_s: float = ENGINE_ITERATION_TIMEOUT_S  # a silent step loop this long: 503
    fault_injection: FaultInjection | None = None  # --enable-fault-injection: /admin/faults (lab.server.faults)
    admin_key: AdminKey | None = None  # --admin-key-hash: /admin/reload (lab.server.reload); faults' key too
    emulate_mig: str | None = None  # --emulate-mig: a MIG profile the engine core emulates (lab.gpu.mig_emulation)
    emulate_mig_with: str = "green-context"  # --emulate-mig-with: or "mps" (lab.gpu.mps)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine_core not in ENGINE_CORES:
            raise ValueError(f"engine_core must be one of {ENGINE_CORES}, got {self.engine_core!r}")
        if self.hf_batch_size < 1:
            raise ValueError(f"hf_batch_size must be >= 1, got {self.hf_batch_size}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if not self.served_model_name:
            raise ValueError("served_model_name must be non-empty")
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")
        if not self.engine_iteration_timeout_s > 0:
            raise ValueError(f"engine_iteration_timeout_s must be > 0, got {self.engine_iteration_timeout_s}")
        if self.fault_injection is not None and (self.engine, self.engine_core) != ("lab", "process"):
            raise ValueError("fault injection needs engine 'lab' with engine_core 'process': faults act where steps run")
        if self.admin_key is not None and (self.engine, self.engine_core) != ("lab", "process"):
            raise ValueError("hot reload (--admin-key-hash) needs engine 'lab' with engine_core 'process': the "
                             "weights are swapped where the steps run")
        if self.emulate_mig is not None:
            if (self.engine, self.engine_core) != ("lab", "process"):
                raise ValueError("--emulate-mig needs --engine lab with its engine core process (the default): the "
                                 "core sets up the slice before its CUDA work, and sizes its memory as the profile's")
            if self.admin_key is not None and self.emulate_mig_with != "mps":
                raise ValueError("--emulate-mig cannot be combined with --admin-key-hash: a hot reload copies on its own "
                                 "thread, outside the green context (--emulate-mig-with mps holds the whole process)")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler (main thread, between bytecodes): only schedule work here.
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining  # a second signal: stop waiting for anyone
            return
        self._draining = True
        logger.info("received %s: draining", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        assert self._loop is not None
        self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        aborted = await self._lifecycle.drain(self._drain_timeout_s)
        if aborted:
            logger.warning("drain: aborted %d request(s) still running at the timeout", aborted)
        self.should_exit = True

    def stop(self) -> None:
        self.should_exit = True


def backend_loader(config: ServerConfig) -> Callable[[], ServingBackend]:
    """The (slow, torch-importing) call that builds the configured backend; run off the event loop."""
    if config.engine == "hf":
        from lab.server.hf_backend import HFBackend

        return partial(HFBackend.load, config.engine_args, config.served_model_name, config.hf_batch_size)
    if config.engine == "hf-cb":
        from lab.server.hf_cb_backend import HFCBBackend

        return partial(HFCBBackend.load, config.engine_args, config.served_model_name, config.hf_cb)
    timeout_s = config.engine_iteration_timeout_s
    if config.engine_core == "process":
        emulation = None if config.emulate_mig is None else MigEmulation(config.emulate_mig, config.emulate_mig_with)
        return partial(EngineCoreBackend.load, config.engine_args, config.served_model_name, timeout_s, emulation)
    return partial(AsyncLLMBackend.load, config.engine_args, config.served_model_name, timeout_s)


def serve(config: ServerConfig) -> int:
    load = backend_loader(config)
    server: DrainingServer | None = None

    def on_load_failed() -> None:
        if server is not None:
            server.stop()

    app = build_app(config.served_model_name, load, on_load_failed, max_request_bytes=config.max_request_bytes,
                    fault_injection=config.fault_injection, admin_key=config.admin_key,
                    partition=partition_label(None, dict(os.environ)))
    lifecycle: Lifecycle = app.state.lifecycle
    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level, access_log=config.access_log,
        timeout_graceful_shutdown=int(SHUTDOWN_BACKSTOP_S), lifespan="on",
    )
    server = DrainingServer(uv_config, lifecycle, config.drain_timeout_s)
    server.run()
    if lifecycle.state is State.FAILED:
        logger.error("exiting: %s", lifecycle.load_error)
        return 1
    return 0
