"""The replica's HTTP app: OpenAI-compatible routes over any `ServingBackend`.

Contract of `build_app(served_model_name, load_backend, on_load_failed)`:
- The socket is served at once; `load_backend()` (slow: builds the engine) runs on a worker
  thread after startup, so `/health` answers 200 during the load and `/ready` answers 503 until
  it is done. A load that raises marks the replica failed and calls `on_load_failed()`.
- Routes: `POST /v1/completions`, `POST /v1/chat/completions` (JSON or SSE), `GET /v1/models`,
  `GET /health` (alive: 503 `engine_dead` once the loaded engine cannot serve, e.g. its core
  process died, and 503 `engine_unresponsive` while its step loop has not turned for the
  backend's limit, e.g. a stopped or hung core process; 200 again once it turns), `GET /ready`
  (model loaded, admitting, engine alive and answering), `GET /metrics` (Prometheus). Both probes also
  answer 503 `engine_degraded` while the backend's `degraded_reason` says its output is garbage (its latest
  step sampled non-finite logits), so a gateway ejects it; new requests still reach the engine, which
  fails each one hit with an explicit error, and one finite step or a repair makes it healthy again.
- `fault_injection` (`lab serve --enable-fault-injection`): mounts `/admin/faults` (`faults.py`);
  without it those routes do not exist. `admin_key` (`lab serve --admin-key-hash`; fault injection's key too)
  mounts `/admin/reload` (`reload.py`: hot reload); `/v1/models` carries the live weights' `version`.
  `partition` ("MIG <profile>" from the environment) or the backend's own ("emulated <profile>") is the
  model card's `partition` and `lab:partition_info` in /metrics; neither appears on a whole device.
- Request bodies over `max_request_bytes` are refused with 413 before they are read whole;
  large ones are parsed and tokenized off the event loop (`request_body.py`, `prompt_ids.py`).
- Every error is OpenAI-shaped JSON (`errors.py`), unknown routes and unexpected exceptions
  included; no error stops the engine or disturbs other requests.
- `app.state.lifecycle` is the `Lifecycle` the runner drains on SIGTERM.
The HTTP layer never imports the engine: a second backend (e.g. transformers `generate`) plugs in
through `load_backend` without touching this file.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from lab.server.backend import ServingBackend
from lab.server.errors import APIError, error_body
from lab.server.faults import AdminKey, FaultInjection, fault_router
from lab.server.lifecycle import Lifecycle
from lab.server.metrics import CONTENT_TYPE, PartitionInfo, ServerMetrics
from lab.server.limits import DEFAULT_MAX_REQUEST_BYTES
from lab.server.reload import ReloadMetrics, reload_router
from lab.server.responses import CHAT, COMPLETION, ResponseBuilder, Shape
from lab.server.sampling import chat_input, completion_input
from lab.server.schemas import ChatCompletionRequest, CompletionRequest, parse_request
from lab.server.serving import ServingContext, serve_generation

logger = logging.getLogger(__name__)


def build_app(served_model_name: str, load_backend: Callable[[], ServingBackend],
              on_load_failed: Callable[[], None] | None = None, *,
              max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
              fault_injection: FaultInjection | None = None, admin_key: AdminKey | None = None,
              partition: str | None = None) -> FastAPI:
    if max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
    lifecycle = Lifecycle()
    metrics = ServerMetrics(served_model_name, lambda: lifecycle.backend.stats() if lifecycle.backend else None)
    metrics.registry.register(ReloadMetrics(served_model_name, lambda: getattr(lifecycle.backend, "weights", None)))
    metrics.registry.register(PartitionInfo(served_model_name, lambda: _partition(lifecycle, partition)))
    ctx = ServingContext(lifecycle, metrics)
    started = int(time.time())

    async def load() -> None:
        try:
            backend = await asyncio.to_thread(load_backend)
        except Exception as exc:  # a replica that cannot load must say why, then exit
            logger.exception("loading the model failed")
            lifecycle.failed(f"{type(exc).__name__}: {exc}")
            if on_load_failed is not None:
                on_load_failed()
            return
        lifecycle.loaded(backend)
        logger.info("model %s loaded: ready", served_model_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(load())
        yield
        loading.cancel()
        if lifecycle.backend is not None:
            await asyncio.to_thread(lifecycle.backend.shutdown)

    app = FastAPI(title="lab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error"),
                            status_code=500)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = await parse_request(request, CompletionRequest, max_request_bytes)
        backend = lifecycle.require_backend()
        gen = await completion_input(req, backend)
        return await serve_generation(request, ctx, _builder(COMPLETION, backend), gen, req.stream,
                                      _include_usage(req))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = await parse_request(request, ChatCompletionRequest, max_request_bytes)
        backend = lifecycle.require_backend()
        gen = await chat_input(req, backend)
        return await serve_generation(request, ctx, _builder(CHAT, backend), gen, req.stream, _include_usage(req))

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": served_model_name, "object": "model", "created": started, "owned_by": "lab",
                "root": served_model_name, "parent": None}
        if lifecycle.backend is not None:
            card["max_model_len"] = lifecycle.backend.max_model_len
            weights = getattr(lifecycle.backend, "weights", None)  # the engine core's: hot reload changes it
            if weights is not None and weights.version:
                card["version"], card["generation"] = weights.version, weights.generation
        label = _partition(lifecycle, partition)
        if label is not None:
            card["partition"] = label
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> JSONResponse:
        dead = _engine_dead(lifecycle)
        if dead is not None:  # alive in name only: let the orchestrator restart it
            return dead.response()
        return JSONResponse({"status": "ok", "state": lifecycle.state.value})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            lifecycle.require_backend()  # only a READY replica has one to give
        except APIError as exc:
            return exc.response()
        dead = _engine_dead(lifecycle)
        if dead is not None:
            return dead.response()
        return JSONResponse({"status": "ready", "model": served_model_name})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    if fault_injection is not None:
        app.include_router(fault_router(lifecycle, fault_injection))
    admin_key = admin_key or fault_injection
    if admin_key is not None:
        app.include_router(reload_router(lifecycle, admin_key))
    return app


def _partition(lifecycle: Lifecycle, started_on: str | None) -> str | None:
    """"emulated <profile>" (the engine core emulates a slice), "MIG <profile>" (started on one), or None."""
    return getattr(lifecycle.backend, "partition", None) or started_on


def _engine_dead(lifecycle: Lifecycle) -> APIError | None:
    """A 503 naming why the loaded engine cannot serve (its core process died; or it has not
    answered for its limit, until it answers again), or None."""
    backend = lifecycle.backend
    if backend is None:
        return None
    if backend.dead_reason is not None:
        return APIError(503, f"the engine cannot serve: {backend.dead_reason}", code="engine_dead")
    if backend.stall_reason is not None:
        return APIError(503, f"the engine is not answering: {backend.stall_reason}", code="engine_unresponsive")
    if backend.degraded_reason is not None:
        return APIError(503, f"engine_degraded: {backend.degraded_reason}", code="engine_degraded")
    return None


def _builder(shape: Shape, backend: ServingBackend) -> ResponseBuilder:
    return ResponseBuilder(shape, f"{shape.id_prefix}{uuid.uuid4().hex}", int(time.time()), backend.model_name)


def _include_usage(req: CompletionRequest | ChatCompletionRequest) -> bool:
    return bool(req.stream and req.stream_options and req.stream_options.include_usage)
