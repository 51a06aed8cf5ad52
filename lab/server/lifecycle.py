"""`Lifecycle`: a replica's state (loading -> ready -> draining, or failed) and its in-flight work.

Contract:
- `LOADING` until the backend is built (`/ready` 503, generation 503 "loading"); `READY` serves;
  `FAILED` if the build raised (the runner then exits non-zero); `DRAINING` after SIGTERM: new
  generation requests get 503 "draining" and `/ready` 503, while admitted ones run to the end.
- `require_backend()` also answers 503 `engine_unresponsive` while the backend reports a stall
  (`stall_reason`: its step loop has not turned for its limit), so new work goes elsewhere.
- `admit(request_id)` registers a generation request or raises `APIError(503)`; `release` is
  idempotent and must run in a `finally` (a streamed request is in flight until its stream ends).
- `drain(timeout_s)` waits for in-flight work to finish; past the timeout it aborts what is left
  through the backend (their streams end with finish_reason "abort") and waits a little more.
  Returns the number of requests it had to abort.
Single-threaded: everything runs on the server's event loop.
"""
from __future__ import annotations

import asyncio
import enum
import logging

from lab.server.backend import ServingBackend
from lab.server.errors import APIError

logger = logging.getLogger(__name__)

ABORT_GRACE_S = 5.0  # after aborting at the drain timeout: time for the aborted streams to end


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.LOADING
        self.backend: ServingBackend | None = None
        self.load_error: str | None = None
        self._in_flight: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- state ---------------------------------------------------------------------------------
    def loaded(self, backend: ServingBackend) -> None:
        self.backend = backend
        if self.state is State.LOADING:  # a SIGTERM during load keeps the replica draining
            self.state = State.READY

    def failed(self, error: str) -> None:
        self.state, self.load_error = State.FAILED, error

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    # ---- admission -----------------------------------------------------------------------------
    def require_backend(self) -> ServingBackend:
        """The backend, if this replica admits new work now; else a 503 saying why."""
        if self.state is State.READY and self.backend is not None:
            stall = self.backend.stall_reason
            if stall is not None:
                raise APIError(503, f"the engine is not answering: {stall}", code="engine_unresponsive")
            return self.backend
        reasons = {
            State.LOADING: ("the model is still loading; retry when /ready answers 200", "model_loading"),
            State.DRAINING: ("the server is shutting down and admits no new requests", "server_draining"),
            State.FAILED: (f"the model failed to load: {self.load_error}", "model_load_failed"),
        }
        message, code = reasons.get(self.state, ("not ready", "not_ready"))
        raise APIError(503, message, code=code)

    def admit(self, request_id: str) -> None:
        self.require_backend()
        self._in_flight.add(request_id)
        self._idle.clear()

    def release(self, request_id: str) -> None:
        self._in_flight.discard(request_id)
        if not self._in_flight:
            self._idle.set()

    # ---- drain ---------------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> int:
        if self.state is not State.FAILED:
            self.state = State.DRAINING
        logger.info("draining: %d request(s) in flight, waiting up to %.1fs", self.num_in_flight, timeout_s)
        if await self._wait_idle(timeout_s):
            return 0
        left = sorted(self._in_flight)
        logger.warning("drain timeout: aborting %d request(s)", len(left))
        if self.backend is not None:
            for request_id in left:
                self.backend.abort(request_id)
        await self._wait_idle(ABORT_GRACE_S)
        return len(left)

    async def _wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(timeout_s, 0.0))
            return True
        except asyncio.TimeoutError:
            return False
