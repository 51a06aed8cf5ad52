"""Admin endpoints, under their own key: replicas, versions, weights, canaries.

Contract: every route needs `Authorization: Bearer <admin key>` matching `admin_key_hash`
(401 otherwise; 403 for every call when the config has no admin key). Tier keys never open
these routes, and the admin key never opens the inference routes.
  GET    /admin/replicas            replicas with health, failures, outstanding work; versions; events
  GET    /admin/versions            stable, previous, weights, canary, per-version health
  PUT    /admin/weights             {"weights": {"v1": 90, "v2": 10}}   (ends a running canary)
  POST   /admin/canary              {"version": "v2", "percent": 1}     (percent optional)
  DELETE /admin/canary              abort the running canary: 100% back to stable
  POST   /admin/replicas            {"url": ..., "version": ..., "weight": 1, "name": ..., "model": ...}
  DELETE /admin/replicas/{name}
  POST   /admin/health/check        run one probe round now, then list replicas
Bad input is a 400 in OpenAI's error shape naming the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request

from lab.gateway.auth import bearer_token, verify_key
from lab.gateway.config import ConfigError, parse_config
from lab.gateway.errors import GatewayError, bad_request, unauthorized

if TYPE_CHECKING:
    from lab.gateway.app import Gateway


def admin_router(gateway: Gateway) -> APIRouter:
    def require_admin(request: Request) -> None:
        stored = gateway.config.admin_key_hash
        if stored is None:
            raise GatewayError(403, "admin endpoints are disabled: the config has no admin_key_hash",
                               "permission_error", "admin_disabled")
        token = bearer_token(request.headers)
        if token is None or not verify_key(token, stored):
            raise unauthorized("missing or invalid admin key")

    router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])
    traffic = gateway.traffic

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise bad_request("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        return body

    @router.get("/replicas")
    async def replicas() -> dict:
        return traffic.snapshot()

    @router.get("/versions")
    async def versions() -> dict:
        snapshot = traffic.snapshot()
        return {k: snapshot[k] for k in ("stable", "previous", "weights", "canary", "versions")}

    @router.put("/weights")
    async def set_weights(request: Request) -> dict:
        weights = (await json_body(request)).get("weights")
        if not isinstance(weights, dict) or not all(isinstance(w, int | float) for w in weights.values()):
            raise bad_request('expected {"weights": {"<version>": <number>, ...}}', param="weights")
        try:
            traffic.set_weights({str(v): float(w) for v, w in weights.items()})
        except ValueError as error:
            raise bad_request(str(error), param="weights") from None
        if traffic.canary is not None:
            traffic.canary = None  # an operator's weights replace the canary's schedule
        traffic.say(gateway.clock(), "weights", f"weights set by an operator: {traffic.weights}")
        return await versions()

    @router.post("/canary")
    async def start_canary(request: Request) -> dict:
        body = await json_body(request)
        version, percent = body.get("version"), body.get("percent")
        if not isinstance(version, str) or (percent is not None and not (isinstance(percent, int | float)
                                                                         and 0 < percent <= 100)):
            raise bad_request('expected {"version": "<version>", "percent": <0..100, optional>}')
        try:
            gateway.canary.start(version, None if percent is None else float(percent))
        except ValueError as error:
            raise bad_request(str(error), param="version") from None
        return await versions()

    @router.delete("/canary")
    async def abort_canary() -> dict:
        try:
            gateway.canary.abort("aborted by an operator", kind="canary_abort_operator")
        except ValueError as error:
            raise bad_request(str(error)) from None
        return await versions()

    @router.post("/replicas")
    async def add_replica(request: Request) -> dict:
        body = await json_body(request)
        try:
            # The same validation as the config file, so an admin cannot add what the config would refuse.
            replica = parse_config({"replicas": [body]}).replicas[0]
            traffic.add_replica(replica)
        except (ConfigError, ValueError) as error:
            raise bad_request(str(error)) from None
        traffic.say(gateway.clock(), "replica_added", f"replica {replica.name!r} ({replica.version}) added",
                    replica.name, replica.version)
        return await replicas()

    @router.delete("/replicas/{name:path}")
    async def remove_replica(name: str) -> dict:
        try:
            removed = traffic.remove_replica(name)
        except ValueError as error:
            raise GatewayError(404, str(error), "invalid_request_error", "replica_not_found") from None
        traffic.say(gateway.clock(), "replica_removed", f"replica {name!r} removed", name, removed.version)
        return await replicas()

    @router.post("/health/check")
    async def check_now() -> dict:
        await gateway.health.check_all()
        return await replicas()

    return router
