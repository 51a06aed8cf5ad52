"""Health: probe every replica with a tiny real inference, eject and re-admit, roll back.

Contract: every `HealthConfig.interval_s` (15 s, as in the article) `HealthChecker.check_all()`
sends each replica a 1-token completion. `record_probe` is the per-replica state machine: a
success resets the failure counts and re-admits an ejected replica; `failure_threshold` (3)
consecutive failures eject it, which is announced on `Traffic.events`, the log and the
`lab_gateway_replica_healthy` gauge. `record_upstream` is the passive half, fed by the request path
(`HealthChecker.record_request`): `passive_failure_threshold` requests in a row that timed out or could
not connect eject a replica before its next probe; any answer from it (a 4xx or 5xx included: the
replica is alive, the request may be at fault) resets that count, and only probes re-admit. The request
path reports a timeout only when the replica answered nothing else while that request waited
(`ReplicaState.answers` did not move): a hung replica answers nobody, a busy one answers others, and a
request slow by its own doing (a huge prompt) is no replica's failure.
Timeouts alone (probe or request timeouts, no refusal, no error answer) never eject the last healthy
replica: a replica that is only slow still serves, its requests bounded by their tiers' budgets, while
ejecting the last one turns every request into a 503 (a chaos drill saw the surviving replica's probes time
out while the killed one reloaded on the same cores, and the gateway ejected both). The event log says
when a replica was spared this way (`spared`).
`decide_rollback` is the pure rollback rule, run after each round: a running canary whose replicas are
all ejected is aborted; a stable version whose replicas are all ejected hands traffic back to `previous`
(the version it replaced), if that one has a healthy replica. The loop then lets the canary controller
judge its window.

Schedule: rounds start every `interval_s` whatever a round took (a probe that waits out its timeout does
not push the next round back), and while a healthy replica has failed a probe, or requests to a replica
have failed since its last passing probe (a suspect), the next round starts `interval_s / 3` after the
last one began, or as soon as it ends: a hang is confirmed sooner, and a replica that passive detection
ejected over a blip is re-admitted sooner. A hung replica (each probe waits
`probe_timeout_s`) is so ejected at most `interval_s + 3 x max(interval_s / 3, probe_timeout_s)` after it
went silent: within 3 intervals while `probe_timeout_s <= 2/3 interval_s`, 45 s with the defaults (15 s,
10 s), where sleeping a whole interval after each round took ~61 s. Requests reach it sooner
(`record_upstream`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from lab.gateway.canary import CanaryController
from lab.gateway.config import HealthConfig
from lab.gateway.traffic import TIMEOUT_PREFIX, ReplicaState, Traffic, log

SUSPECT_SPEEDUP = 3  # rounds this many times as often while a healthy replica has failed a probe


def _spared(traffic: Traffic, replica: ReplicaState, timed_out: bool, now: float, why: str) -> bool:
    """A timeout must not eject the last healthy replica (see the module docstring); says so when it spares one."""
    if not timed_out or any(r.healthy for r in traffic.replicas.values() if r is not replica):
        return False
    traffic.say(now, "spared", f"replica {replica.name!r} ({replica.version}): {why}, but it is the last healthy "
                               f"replica and only timed out: kept in service", replica.name, replica.version)
    return True


def record_probe(traffic: Traffic, replica: ReplicaState, ok: bool, error: str, threshold: int, now: float,
                 timed_out: bool = False) -> str | None:
    """Apply one probe outcome; returns "ejected" or "readmitted" when the replica changed state."""
    if ok:
        replica.consecutive_failures, replica.consecutive_upstream_failures, replica.last_error = 0, 0, ""
        replica.answers += 1
        if not replica.healthy:
            replica.healthy = True
            traffic.say(now, "readmitted", f"replica {replica.name!r} ({replica.version}) passed its probe: re-admitted",
                         replica.name, replica.version)
            return "readmitted"
        return None
    replica.consecutive_failures += 1
    replica.last_error = error
    if replica.healthy and replica.consecutive_failures >= threshold:
        if _spared(traffic, replica, timed_out, now, f"{replica.consecutive_failures} probes timed out in a row"):
            return None
        replica.healthy = False
        traffic.say(now, "ejected", f"replica {replica.name!r} ({replica.version}) failed {replica.consecutive_failures} "
                                    f"probes in a row, last: {error}; ejected", replica.name, replica.version)
        return "ejected"
    return None


def record_upstream(traffic: Traffic, replica: ReplicaState, failure: str | None, threshold: int,
                    now: float) -> str | None:
    """Apply one request's upstream outcome: `failure` names a timeout or connection failure, None an answer.

    Returns "ejected" when this failure ejected the replica. Re-admission is the probes' (`record_probe`).
    """
    if failure is None:
        replica.consecutive_upstream_failures = 0
        replica.answers += 1
        return None
    replica.consecutive_upstream_failures += 1
    replica.last_error = failure
    if replica.healthy and replica.consecutive_upstream_failures >= threshold:
        timed_out = failure.startswith(TIMEOUT_PREFIX)
        if _spared(traffic, replica, timed_out, now, f"{replica.consecutive_upstream_failures} requests timed out"):
            return None
        replica.healthy = False
        traffic.say(now, "ejected", f"replica {replica.name!r} ({replica.version}): "
                                    f"{replica.consecutive_upstream_failures} requests in a row timed out or could "
                                    f"not connect, last: {failure}; ejected before its next probe",
                    replica.name, replica.version)
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

    async def probe(self, replica: ReplicaState) -> tuple[bool, str, bool]:
        """One tiny real inference: a 1-token completion must come back with a choice. (ok, error, timed out)."""
        try:
            body = {"model": await self._model_of(replica), "prompt": self.config.probe_prompt, "max_tokens": 1}
            reply = await self.client.post(f"{replica.config.url}/v1/completions", json=body,
                                           timeout=self.config.probe_timeout_s)
            if reply.status_code != 200:
                return False, f"HTTP {reply.status_code}: {reply.text[:200]}", False
            if not reply.json().get("choices"):
                return False, "reply has no choices", False
            return True, "", False
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
            self._models.pop(replica.name, None)  # a restarted replica may serve another model id
            return False, f"{type(error).__name__}: {error}", isinstance(error, httpx.TimeoutException)

    async def check_all(self) -> None:
        replicas = list(self.traffic.replicas.values())
        outcomes = await asyncio.gather(*(self.probe(r) for r in replicas))
        now = self._clock()
        for replica, (ok, error, timed_out) in zip(replicas, outcomes):
            if replica.name in self.traffic.replicas:  # removed by an admin meanwhile: nothing to record
                record_probe(self.traffic, replica, ok, error, self.config.failure_threshold, now, timed_out)
        decision = decide_rollback(self.traffic)
        if decision is not None:
            apply_rollback(self.traffic, decision, self.canary, now)
            self.rollbacks += 1
        self.canary.tick()

    def record_request(self, replica: ReplicaState, failure: str | None) -> None:
        """The request path's word on a replica: a timeout or connection failure, or None for an answer."""
        if failure is None:  # the common case, on every request: no clock, no lookup
            replica.consecutive_upstream_failures = 0
            replica.answers += 1
        elif replica.name in self.traffic.replicas:
            record_upstream(self.traffic, replica, failure, self.config.passive_failure_threshold, self._clock())

    def next_round_in(self, round_started: float, now: float) -> float:
        """Seconds from `now` to the next round (see the schedule in the module docstring)."""
        suspect = any((r.healthy and r.consecutive_failures) or r.consecutive_upstream_failures
                      for r in self.traffic.replicas.values())
        interval = self.config.interval_s / SUSPECT_SPEEDUP if suspect else self.config.interval_s
        return max(0.0, round_started + interval - now)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.check_all()
            except Exception:  # a bug in one round must not end health checking for good
                log.exception("health round failed; next round in %s s", self.config.interval_s)
            await asyncio.sleep(self.next_round_in(started, loop.time()))
