"""`/admin/reload`: hot reload of a replica's weights (`lab serve --admin-key-hash ...`), its version and metrics.

Contract:
- `reload_router(lifecycle, admin)` (mounted when the server has an admin key; `faults.AdminKey`):
    POST /admin/reload {"source": "<checkpoint dir or preset>", "seed": N, "policy": "switch" | "drain",
                        "staging": "auto" | "device" | "host"}
  loads the new weights beside the live ones in the engine core while it serves, checks and probes them,
  and switches between two steps (`lab.engine.weight_reload`); it answers when the new weights serve (switch)
  or new requests start on them (drain): 200 with the reload's record (`outcome`, `version`, `generation`,
  `read_s`, `validate_s`, `probe_s`, `pause_ms`, ...). 400 `reload_refused` names what was wrong (a tensor,
  a config field, the memory) and the old weights keep serving; 409 while another reload runs or on a backend
  without an engine core; 503 while loading or once the core is gone; 504 if the core does not answer within
  `RELOAD_REPLY_TIMEOUT_S`. `GET /admin/reload` is the live version and the latest records.
  Every route needs `Authorization: Bearer <admin key>` (401 `invalid_admin_key`).
- `WeightsStatus`: the live version (`version`, `generation`, `reloading`), kept up to date by the core
  backend from every batch and reply, and the last `RECORDS` reload records; `/v1/models` shows the version
  and `ReloadMetrics` exports it to Prometheus at scrape time:
  `lab:weights_info{model_name, version, generation}` (1), `lab:weight_reloads_total{model_name, outcome}`,
  `lab:weight_reload_duration_seconds` and `lab:weight_reload_pause_seconds` (summaries: count and sum; the
  pause is the step loop's stall at the switch), `lab:weight_reload_last_pause_seconds`.
Torch-free, like the rest of the server process.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from fastapi import APIRouter, Depends
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from starlette.requests import Request

from lab.engine.core_messages import ReloadReply, ReloadWeights
from lab.server.errors import APIError
from lab.server.fault_control import FaultChannelClosed, FaultControl, FaultTimeout
from lab.server.faults import read_json_body
from lab.server.lifecycle import Lifecycle

RELOAD_REPLY_TIMEOUT_S = 900.0  # reading a large checkpoint from a slow disk takes minutes
RECORDS = 32
POLICIES = ("switch", "drain")
STAGINGS = ("auto", "device", "host")
FIELDS = ("source", "seed", "policy", "staging")


class WeightsStatus:
    def __init__(self, version: str = "") -> None:
        self.version, self.generation, self.reloading = version, 0, False
        self.records: deque[dict] = deque(maxlen=RECORDS)
        self.outcomes: Counter = Counter()
        self._lock = threading.Lock()  # written by the core client's reader thread, read by scrapes

    def update(self, version: str, generation: int, reloading: bool) -> None:
        if version:  # a fake core in tests sends none
            self.version, self.generation, self.reloading = version, generation, reloading

    def saw(self, record: dict) -> None:
        with self._lock:
            self.records.append(record)
            self.outcomes[str(record.get("outcome"))] += 1
        if record.get("outcome") in ("switched", "promoted"):
            self.version, self.generation = str(record.get("version", self.version)), int(record.get("generation", 0))

    def snapshot(self) -> tuple[list[dict], Counter]:
        with self._lock:
            return list(self.records), Counter(self.outcomes)


def reload_router(lifecycle: Lifecycle, admin) -> APIRouter:
    router = APIRouter(prefix="/admin", dependencies=[Depends(admin.require)])

    @router.post("/reload")
    async def reload(request: Request) -> dict:
        body = parse_reload(await read_json_body(request))
        control, _ = _engine(lifecycle)
        try:
            reply: ReloadReply = await control.call(lambda command_id: ReloadWeights(command_id, **body))
        except FaultTimeout as exc:
            raise APIError(504, str(exc), code="engine_unresponsive") from None
        except FaultChannelClosed as exc:
            raise APIError(503, f"the engine cannot serve: {exc}", code="engine_dead") from None
        record = {k: v for k, v in reply.record.items() if k != "tag"}
        if record.get("outcome") == "refused":
            busy = "already in progress" in str(record.get("error"))
            raise APIError(409 if busy else 400, f"the reload was refused: {record.get('error')}",
                           code="reload_in_progress" if busy else "reload_refused")
        return record

    @router.get("/reload")
    async def status() -> dict:
        _, weights = _engine(lifecycle)
        records, _ = weights.snapshot()
        return {"version": weights.version, "generation": weights.generation, "reloading": weights.reloading,
                "recent": [{k: v for k, v in r.items() if k != "tag"} for r in records]}

    return router


def _engine(lifecycle: Lifecycle) -> tuple[FaultControl, WeightsStatus]:
    backend = lifecycle.backend
    if backend is None:
        raise APIError(503, f"the replica is {lifecycle.state.value}: no engine to reload yet", code="not_ready")
    control, weights = getattr(backend, "reload_control", None), getattr(backend, "weights", None)
    if control is None or weights is None:
        raise APIError(409, "hot reload needs the engine core process (--engine lab --engine-core process)",
                       code="reload_unsupported")
    return control, weights


def parse_reload(body: dict[str, Any]) -> dict[str, Any]:
    """The `ReloadWeights` fields of a POST body; `APIError(400)` naming the first problem."""
    extra = sorted(set(body) - set(FIELDS))
    if extra:
        raise _bad(extra[0], f"{extra[0]} is not a reload field (its fields: {', '.join(FIELDS)})")
    source = body.get("source")
    if not isinstance(source, str) or not source:
        raise _bad("source", f"source must be a checkpoint directory or a preset name, got {source!r}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise _bad("seed", f"seed must be an integer in [0, 2**63), got {seed!r}")
    policy, staging = body.get("policy", "switch"), body.get("staging", "auto")
    if policy not in POLICIES:
        raise _bad("policy", f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if staging not in STAGINGS:
        raise _bad("staging", f"staging must be one of {', '.join(STAGINGS)}, got {staging!r}")
    return {"source": source, "seed": seed, "policy": policy, "staging": staging}


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


class ReloadMetrics:
    """A Prometheus collector over the backend's `WeightsStatus` (nothing while none is loaded)."""

    def __init__(self, model_name: str, read_weights) -> None:
        self.model_name, self.read_weights = model_name, read_weights

    def collect(self):
        weights: WeightsStatus | None = self.read_weights()
        if weights is None:
            return
        info = GaugeMetricFamily("lab:weights_info", "The live weights' version (1).",
                                 labels=["model_name", "version", "generation"])
        info.add_metric([self.model_name, weights.version, str(weights.generation)], 1.0)
        yield info
        records, outcomes = weights.snapshot()
        total = CounterMetricFamily("lab:weight_reloads", "Hot reloads by outcome (refused, switched, draining, "
                                    "promoted).", labels=["model_name", "outcome"])
        for outcome, count in sorted(outcomes.items()):
            total.add_metric([self.model_name, outcome], count)
        yield total
        timed = [r for r in records if r.get("outcome") in ("switched", "promoted")]
        for name, doc, values in (
                ("lab:weight_reload_duration_seconds", "Reload start to switch (read, check, probe, copy in).",
                 [r["at"] - r["started_at"] for r in timed if "at" in r and "started_at" in r]),
                ("lab:weight_reload_pause_seconds", "The step loop's stall at the switch (copy in).",
                 [r["pause_ms"] / 1000.0 for r in timed if "pause_ms" in r])):
            summary = SummaryMetricFamily(name, doc + f" Over the last {RECORDS} records.", labels=["model_name"])
            summary.add_metric([self.model_name], len(values), sum(values))
            yield summary
        last = GaugeMetricFamily("lab:weight_reload_last_pause_seconds", "The latest switch's step-loop stall.",
                                 labels=["model_name"])
        pauses = [r["pause_ms"] / 1000.0 for r in timed if "pause_ms" in r]
        if pauses:
            last.add_metric([self.model_name], pauses[-1])
        yield last
