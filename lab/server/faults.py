"""`/admin/faults`: a replica's GPU and model faults for chaos drills (`lab serve --enable-fault-injection`).

Contract of `fault_router(lifecycle, config)` (the app mounts it only when the flag is given: without it the
routes do not exist and answer 404 like any unknown path):
- Every route needs `Authorization: Bearer <admin key>` whose sha256 is `config.admin_key_hash`
  (`sha256:<hex>`, what `lab gateway hash-key` prints); 401 `invalid_admin_key` otherwise.
- `POST /admin/faults` arms one fault in the engine core, where the steps run (`lab.engine.faults`):
    {"kind": "oom", "mode": "auto" | "raise" | "allocate", "steps": N}   (or "duration_s": D; default 1 step)
    {"kind": "hang_step", "duration_s": D}        the next step blocks D s (default 60), or until a clear
    {"kind": "slow_step", "delay_ms": D}          every step sleeps D ms more, until a clear
    {"kind": "nan_weights", "weight": "<name>"}   or {"layer": L}: L's attention output projection (default 0)
    {"kind": "clear"}                             the same as DELETE
  `DELETE /admin/faults` undoes every fault; `GET /admin/faults` says what is armed and what ended lately.
- 200 answers are `{"record": {...}, "armed": [...], "recent": [...]}`: what the command did, with `kind`, its
  settings, `device`, wall and monotonic times (oom: the `mode` that ran). 400 names a bad body or what the
  engine refused (an unknown weight, allocate on a CPU); 503 while loading or once the core is gone; 504
  `engine_unresponsive` when the core does not answer in time (a hung step: only a clear ends it early);
  409 on a backend without an engine core (`--engine hf`, `--engine-core thread`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request

from lab.engine.core_messages import (
    OOM_MODES, ArmFault, ClearFaults, FaultReply, FaultSpec, HangStepFault, NanWeightsFault, OomFault, ShowFaults,
    SlowStepFault,
)
from lab.server.errors import APIError
from lab.server.fault_control import FaultChannelClosed, FaultControl, FaultTimeout
from lab.server.lifecycle import Lifecycle

MAX_BODY_BYTES = 4096
MAX_DURATION_S = 3600.0  # a forgotten fault heals itself within the hour
MAX_DELAY_MS = 600_000.0
MAX_STEPS = 1_000_000
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
# kind -> the fields its body may carry besides "kind"
FIELDS = {"oom": ("mode", "steps", "duration_s"), "hang_step": ("duration_s",), "slow_step": ("delay_ms",),
          "nan_weights": ("weight", "layer"), "clear": ()}


@dataclass(frozen=True)
class AdminKey:
    """`--admin-key-hash sha256:<hex>`: the key that opens a replica's admin routes (/admin/reload, and
    /admin/faults with --enable-fault-injection)."""

    admin_key_hash: str

    def __post_init__(self) -> None:
        if not _HASH.fullmatch(self.admin_key_hash):
            raise ValueError("admin_key_hash must be sha256:<64 hex digits>; make one with `lab gateway hash-key`")

    def accepts(self, key: str) -> bool:
        digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()  # cheap: safe on the event loop
        return hmac.compare_digest(digest, self.admin_key_hash)

    def require(self, request: Request) -> None:
        """A route dependency: 401 `invalid_admin_key` unless the request carries this key."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key or not self.accepts(key.strip()):
            raise APIError(401, "missing or invalid admin key (Authorization: Bearer <admin key>)",
                           code="invalid_admin_key")


FaultInjection = AdminKey  # --enable-fault-injection: the fault routes, behind the same key


def fault_router(lifecycle: Lifecycle, config: AdminKey) -> APIRouter:
    router = APIRouter(prefix="/admin", dependencies=[Depends(config.require)])

    @router.post("/faults")
    async def arm(request: Request) -> dict:
        spec = parse_fault(await read_json_body(request))
        if spec is None:
            return await _call(lifecycle, ClearFaults)
        return await _call(lifecycle, lambda command_id: ArmFault(command_id, spec))

    @router.delete("/faults")
    async def clear() -> dict:
        return await _call(lifecycle, ClearFaults)

    @router.get("/faults")
    async def show() -> dict:
        return await _call(lifecycle, ShowFaults)

    return router


async def _call(lifecycle: Lifecycle, make) -> dict:
    backend = lifecycle.backend
    if backend is None:
        raise APIError(503, f"the replica is {lifecycle.state.value}: no engine to fault yet", code="not_ready")
    # Only the engine core backend can carry faults to where steps run (ServingBackend has no such member).
    control: FaultControl | None = getattr(backend, "fault_control", None)
    if control is None:
        raise APIError(409, "fault injection needs the engine core process (--engine lab --engine-core process)",
                       code="fault_injection_unsupported")
    try:
        reply: FaultReply = await control.call(make)
    except FaultTimeout as exc:
        raise APIError(504, str(exc), code="engine_unresponsive") from None
    except FaultChannelClosed as exc:
        raise APIError(503, f"the engine cannot serve: {exc}", code="engine_dead") from None
    if reply.error is not None:
        raise APIError(400, f"the engine refused the fault: {reply.error}", code="fault_refused")
    return {"record": reply.record, "armed": reply.armed, "recent": reply.recent}


async def read_json_body(request: Request) -> dict:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise APIError(413, f"an admin body is at most {MAX_BODY_BYTES} bytes", code="body_too_large")
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_type")
    return value


def parse_fault(body: dict[str, Any]) -> FaultSpec | None:
    """The spec a POST body asks for (None: clear); `APIError(400)` naming the first problem."""
    kind = body.get("kind")
    if kind not in FIELDS:
        raise _bad("kind", f"kind must be one of {', '.join(FIELDS)}, got {kind!r}")
    extra = sorted(set(body) - {"kind", *FIELDS[kind]})
    if extra:
        raise _bad(extra[0], f"{extra[0]} is not a field of a {kind} fault (its fields: {', '.join(FIELDS[kind])})")
    if kind == "oom":
        mode = body.get("mode", "auto")
        if mode not in OOM_MODES:
            raise _bad("mode", f"mode must be one of {', '.join(OOM_MODES)}, got {mode!r}")
        steps, duration_s = _int(body, "steps", MAX_STEPS), _number(body, "duration_s", MAX_DURATION_S)
        if steps is not None and duration_s is not None:
            raise _bad("steps", "give steps or duration_s, not both")
        return OomFault(mode, steps, duration_s)
    if kind == "hang_step":
        duration_s = _number(body, "duration_s", MAX_DURATION_S)
        return HangStepFault() if duration_s is None else HangStepFault(duration_s)
    if kind == "slow_step":
        delay_ms = _number(body, "delay_ms", MAX_DELAY_MS)
        if delay_ms is None:
            raise _bad("delay_ms", "a slow_step fault needs delay_ms")
        return SlowStepFault(delay_ms)
    if kind == "nan_weights":
        weight, layer = body.get("weight"), _int(body, "layer", MAX_STEPS, minimum=0)
        if weight is not None and (not isinstance(weight, str) or not weight):
            raise _bad("weight", f"weight must be a parameter name, got {weight!r}")
        if weight is not None and layer is not None:
            raise _bad("weight", "give weight or layer, not both")
        return NanWeightsFault(weight, 0 if layer is None else layer)
    return None  # clear


def _number(body: dict, name: str, maximum: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, f"{name} must be a number, got {value!r}")
    if not 0 < value <= maximum:
        raise _bad(name, f"{name} must be in (0, {maximum:g}], got {value!r}")
    return float(value)


def _int(body: dict, name: str, maximum: int, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _bad(name, f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")
