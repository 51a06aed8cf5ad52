"""A rolling hot reload of a gateway's replicas: one at a time, probed, continued, or rolled back.

Contract: `rolling_reload(RollingReload(...)) -> dict` (also `lab gateway rolling-reload`) reads the replicas
from the gateway (`GET /admin/replicas`, its admin key) and, for each in turn:
1. notes its live version (`GET <replica>/admin/reload`, the replicas' admin key);
2. reloads it (`POST <replica>/admin/reload`, `policy` drain by default: requests in flight finish on the old
   weights while the gateway keeps routing to it); a refusal leaves that replica as it was;
3. probes it: `/health` answers 200, one greedy completion straight to it succeeds, and a gateway probe
   round (`POST /admin/health/check`) lists it healthy;
4. watches it for `observe_s` seconds through the gateway: it must stay in service with no failed request
   in a row (the gateway's `consecutive_upstream_failures`).
The first step that fails stops the rollout and rolls back: every replica already reloaded is reloaded to
the version it had (a preset label `<preset>@seed<N>` or a checkpoint path, read in step 1), newest first.
The answer lists each replica's steps (`reload` record, `probe`, `outcome`: reloaded, refused, failed,
rolled_back) and `completed` / `rolled_back`. Every HTTP call has a timeout; a replica that does not answer
is a failed step, never a hang. Bad arguments are `LabError`s naming them.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from lab.errors import LabError

POLICIES = ("switch", "drain")
_PRESET_LABEL = re.compile(r"(?P<preset>[^@/\s]+)@seed(?P<seed>\d+)")
PROBE_BODY = {"prompt": "Hello", "max_tokens": 1, "temperature": 0.0}


@dataclass(frozen=True)
class RollingReload:
    gateway_url: str
    gateway_admin_key: str
    replica_admin_key: str
    source: str
    seed: int | None = None
    policy: str = "drain"
    staging: str = "auto"
    observe_s: float = 10.0
    reload_timeout_s: float = 900.0
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.gateway_url.startswith(("http://", "https://")):
            raise LabError(f"gateway_url must be an http(s) URL, got {self.gateway_url!r}")
        if not self.gateway_admin_key or not self.replica_admin_key:
            raise LabError("the gateway's admin key and the replicas' admin key are both needed")
        if not self.source:
            raise LabError("source: a checkpoint directory or a preset name")
        if self.policy not in POLICIES:
            raise LabError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.observe_s < 0 or self.reload_timeout_s <= 0 or self.poll_s <= 0:
            raise LabError("observe_s must be >= 0, reload_timeout_s and poll_s > 0")


def version_source(label: str) -> tuple[str, int | None]:
    """The reload source that gives back a version label: `tiny@seed7` -> ("tiny", 7); a path -> (path, None)."""
    match = _PRESET_LABEL.fullmatch(label)
    return (match["preset"], int(match["seed"])) if match else (label, None)


class _Step(RuntimeError):
    """A rollout step that failed, with its reason."""


def rolling_reload(plan: RollingReload, client: httpx.Client | None = None) -> dict:
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
    try:
        return _roll(plan, client)
    finally:
        if own:
            client.close()


def _roll(plan: RollingReload, client: httpx.Client) -> dict:
    gateway_admin = {"Authorization": f"Bearer {plan.gateway_admin_key}"}
    replica_admin = {"Authorization": f"Bearer {plan.replica_admin_key}"}
    listing = _json(client.get(f"{plan.gateway_url}/admin/replicas", headers=gateway_admin), "the gateway's replicas")
    replicas = [(r["name"], r["url"].rstrip("/")) for r in listing["replicas"]]
    if not replicas:
        raise LabError("the gateway lists no replica to reload")
    steps: list[dict] = []
    reloaded: list[tuple[str, str, str]] = []  # (name, url, the version it had)
    for name, url in replicas:
        step: dict = {"replica": name, "url": url}
        steps.append(step)
        try:
            before = _json(client.get(f"{url}/admin/reload", headers=replica_admin), f"{name}'s version")["version"]
            step["version_before"] = before
            body = {"source": plan.source, "seed": plan.seed, "policy": plan.policy, "staging": plan.staging}
            answer = client.post(f"{url}/admin/reload", headers=replica_admin, timeout=plan.reload_timeout_s,
                                 json={k: v for k, v in body.items() if v is not None})
            if answer.status_code != 200:
                step["outcome"] = "refused"
                raise _Step(f"{name} refused the reload ({answer.status_code}): {_message(answer)}")
            step["reload"] = answer.json()
            reloaded.append((name, url, before))
            step["probe"] = _probe(plan, client, name, url, gateway_admin)
            step["outcome"] = "reloaded"
        except (_Step, httpx.HTTPError, LabError, KeyError) as exc:
            step.setdefault("outcome", "failed")
            step["error"] = str(exc) or type(exc).__name__
            rollback = _roll_back(plan, client, reloaded, replica_admin)
            return {"completed": False, "rolled_back": True, "steps": steps, "rollback": rollback,
                    "error": step["error"]}
    return {"completed": True, "rolled_back": False, "steps": steps}


def _probe(plan: RollingReload, client: httpx.Client, name: str, url: str, gateway_admin: dict) -> dict:
    started = time.monotonic()
    health = client.get(f"{url}/health")
    if health.status_code != 200:
        raise _Step(f"{name}: /health answered {health.status_code} after the reload: {_message(health)}")
    completion = client.post(f"{url}/v1/completions", json=PROBE_BODY)
    if completion.status_code != 200:
        raise _Step(f"{name}: a probe completion failed ({completion.status_code}): {_message(completion)}")
    listing = _json(client.post(f"{plan.gateway_url}/admin/health/check", headers=gateway_admin), "a probe round")
    _in_service(listing, name)
    deadline = time.monotonic() + plan.observe_s
    while time.monotonic() < deadline:  # the gateway's own traffic to it, for observe_s
        time.sleep(min(plan.poll_s, max(0.0, deadline - time.monotonic())))
        _in_service(_json(client.get(f"{plan.gateway_url}/admin/replicas", headers=gateway_admin), "the replicas"),
                    name)
    return {"healthy": True, "probe_token_text": completion.json()["choices"][0]["text"],
            "observed_s": plan.observe_s, "probe_s": time.monotonic() - started}


def _in_service(listing: dict, name: str) -> None:
    mine = next((r for r in listing["replicas"] if r["name"] == name), None)
    if mine is None:
        raise _Step(f"{name} is no longer in the gateway's list")
    if not mine["healthy"] or mine["consecutive_upstream_failures"]:
        raise _Step(f"{name} is out of service or failing requests after its reload "
                    f"(healthy {mine['healthy']}, failures in a row {mine['consecutive_upstream_failures']}, "
                    f"last error {mine.get('last_error')!r})")


def _roll_back(plan: RollingReload, client: httpx.Client, reloaded: list[tuple[str, str, str]],
               replica_admin: dict) -> list[dict]:
    done = []
    for name, url, before in reversed(reloaded):
        source, seed = version_source(before)
        body = {"source": source, "policy": "switch", "staging": plan.staging, **({} if seed is None else {"seed": seed})}
        try:
            answer = client.post(f"{url}/admin/reload", headers=replica_admin, json=body, timeout=plan.reload_timeout_s)
            done.append({"replica": name, "to": before, "status": answer.status_code,
                         "record": answer.json() if answer.status_code == 200 else _message(answer)})
        except httpx.HTTPError as exc:
            done.append({"replica": name, "to": before, "status": None, "record": str(exc)})
    return done


def _json(answer: httpx.Response, what: str) -> dict:
    if answer.status_code != 200:
        raise LabError(f"{what}: HTTP {answer.status_code}: {_message(answer)}")
    return answer.json()


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:300]
