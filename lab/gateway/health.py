"""Health: probe every replica with a tiny real inference, eject and re-admit, roll back.

Contract: every `HealthConfig.interval_s` (15 s, as in the article) `HealthChecker.check_all()`
sends each replica a 1-token completion. `record_probe` is the per-replica state machine: a
success resets the failure count and re-admits an ejected replica; `failure_threshold` (3)
consecutive failures eject it, which is announced on `Traffic.events`, the log and the
`lab_gateway_replica_healthy` gauge. `decide_rollback` is the pure rollback rule, run after
each round: a running canary whose replicas are all ejected is aborted; a stable version whose
replicas are all ejected hands traffic back to `previous` (the version it replaced), if that one
has a healthy replica. The loop then lets the canary controller judge its window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from lab.gateway.canary import CanaryController
from lab.gateway.config import HealthConfig
from lab.gateway.traffic import ReplicaState, Traffic, log


def record_probe(traffic: Traffic, replica: ReplicaState, ok: bool, error: str, threshold: int, now: float) -> str | None:
    """Apply one probe outcome; returns "ejected" or "readmitted" when the replica changed state."""
    if ok:
        replica.consecutive_failures, replica.last_error = 0, ""
        if not replica.healthy:
            replica.healthy = True
            traffic.say(now, "readmitted", f"replica {replica.name!r} ({replica.version}) passed its probe: re-admitted",
                         replica.name, replica.version)
            return "readmitted"
        return None
    replica.consecutive_failures += 1
    replica.last_error = error
    if replica.healthy and replica.consecutive_failures >= threshold:
        replica.healthy = False
        traffic.say(now, "ejected", f"replica {replica.name!r} ({replica.version}) failed {replica.consecutive_failures} "
                                    f"probes in a row, last: {error}; ejected", replica.name, replica.version)
        return "ejected"
    return None


@dataclass(frozen=True)
class Rollback:
    action: str  # abort_canary | rollback
    from_version: str
    to_version: str


def decide_rollback(traffic: Traffic) -> Rollback | None:
    def dead(version: str) -> bool:
        return bool(traffic.of_version(version, healthy_only=False)) and not traffic.of_version(version)

    if traffic.canary is not None and dead(traffic.canary.version):
        return Rollback("abort_canary", traffic.canary.version, traffic.stable)
    if traffic.previous and dead(traffic.stable) and traffic.of_version(traffic.previous):
        return Rollback("rollback", traffic.stable, traffic.previous)
    return None


def apply_rollback(traffic: Traffic, decision: Rollback, canary: CanaryController, now: float) -> None:
    if decision.action == "abort_canary":
        canary.abort(f"every replica of {decision.from_version!r} failed its probes")
        return
    traffic.stable, traffic.previous = decision.to_version, None
    traffic.weights = {decision.to_version: 100.0}
    traffic.say(now, "rollback", f"every replica of {decision.from_version!r} failed its probes: "
                                 f"rolled back to {decision.to_version!r}")


class HealthChecker:
    def __init__(self, traffic: Traffic, config: HealthConfig, client: httpx.AsyncClient,
                 canary: CanaryController, clock: Callable[[], float] = time.monotonic) -> None:
        self.traffic, self.config, self.client, self.canary = traffic, config, client, canary
        self._clock = clock
        self._models: dict[str, str] = {}  # replica name -> the model id it serves, for probes
        self.rollbacks = 0

    async def _model_of(self, replica: ReplicaState) -> str:
        if replica.config.model:
            return replica.config.model
        if replica.name not in self._models:
            reply = await self.client.get(f"{replica.config.url}/v1/models", timeout=self.config.probe_timeout_s)
            reply.raise_for_status()
            self._models[replica.name] = reply.json()["data"][0]["id"]
        return self._models[replica.name]

    async def probe(self, replica: ReplicaState) -> tuple[bool, str]:
        """One tiny real inference: a 1-token completion must come back with a choice."""
        try:
            body = {"model": await self._model_of(replica), "prompt": self.config.probe_prompt, "max_tokens": 1}
            reply = await self.client.post(f"{replica.config.url}/v1/completions", json=body,
                                           timeout=self.config.probe_timeout_s)
            if reply.status_code != 200:
                return False, f"HTTP {reply.status_code}: {reply.text[:200]}"
            if not reply.json().get("choices"):
                return False, "reply has no choices"
            return True, ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
            self._models.pop(replica.name, None)  # a restarted replica may serve another model id
            return False, f"{type(error).__name__}: {error}"

    async def check_all(self) -> None:
        replicas = list(self.traffic.replicas.values())
        outcomes = await asyncio.gather(*(self.probe(r) for r in replicas))
        now = self._clock()
        for replica, (ok, error) in zip(replicas, outcomes):
            if replica.name in self.traffic.replicas:  # removed by an admin meanwhile: nothing to record
                record_probe(self.traffic, replica, ok, error, self.config.failure_threshold, now)
        decision = decide_rollback(self.traffic)
        if decision is not None:
            apply_rollback(self.traffic, decision, self.canary, now)
            self.rollbacks += 1
        self.canary.tick()

    async def run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a bug in one round must not end health checking for good
                log.exception("health round failed; next round in %s s", self.config.interval_s)
            await asyncio.sleep(self.config.interval_s)
