"""GPU and model faults inside a replica: CUDA out-of-memory, a hung step, a slow step, NaN weights.

They act through the replica's own `/admin/faults` (`lab serve --enable-fault-injection --admin-key-hash ...`,
`lab.server.faults`), armed in its engine core where the steps run; the record says `backend: "replica"`.

Contract (chaostoolkit actions and probes: JSON-able arguments, the replica by URL and its admin key; every
action returns `FaultRecord.as_dict()`: `action`, `target` (the URL), `at_wall_s`/`at_monotonic_s` stamped
once the replica answered, plus the replica's own record: `kind`, settings, `device`, its `armed_at_*` clocks,
for oom the `mode` that ran, and `armed` (every fault armed after it)):
- `replica_url(state_path, replica)`: a `lab up` replica's own URL from state.json (not its fault proxy's:
  a fault on the link must not stop the drill from undoing a model fault).
- `arm_oom(url, key, mode="auto", steps=None, duration_s=None)`: the next `steps` steps (default 1), or
  every step for `duration_s`, fail with CUDA out-of-memory (`auto`: really exhausting memory on CUDA,
  raising at the step boundary elsewhere).
- `arm_hang_step(url, key, duration_s=60)`: the next step blocks; the replica stops answering.
- `arm_slow_step(url, key, delay_ms)`: every step sleeps `delay_ms` more: a slow replica.
- `arm_nan_weights(url, key, weight=None, layer=0)`: one weight turns NaN; the replica fails the requests
  it hits and reports itself degraded (`/health` 503) until cleared.
- `clear_model_faults(url, key)`: undo everything (a rollback: a replica that is gone or whose engine is
  gone has nothing left to undo, and the record says `cleared: false` and why, rather than failing).
- Probes: `armed_model_faults(url, key)` (the kinds armed), `no_model_fault_armed(url, key)` (its boolean
  form, for a steady state), `replica_health(url)` (`{"status", "code"}` of
  its `/health`), `wait_for_replica_health(url, status, timeout_s)` (when `/health` answered `status`).
A refusal (wrong key, a fault the engine cannot do, no fault routes) is a `LabError` naming the replica's
answer.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from lab.chaos.records import FaultRecord
from lab.chaos.targets import service_state
from lab.errors import LabError

__all__ = ["replica_url", "arm_oom", "arm_hang_step", "arm_slow_step", "arm_nan_weights", "clear_model_faults",
           "armed_model_faults", "no_model_fault_armed", "replica_health", "wait_for_replica_health"]

HTTP_TIMEOUT_S = 30.0  # a replica answers within a step; arming oom allocate on a large GPU takes a second or so
POLL_S = 0.2


def replica_url(state_path: str, replica: str) -> str:
    record = service_state(state_path).process(replica)
    if record.kind != "replica":
        raise LabError(f"{replica!r} is the service's {record.kind}, not a replica")
    return record.url


def arm_oom(replica_url: str, admin_key: str, mode: str = "auto", steps: int | None = None,
            duration_s: float | None = None) -> dict:
    body: dict[str, Any] = {"kind": "oom", "mode": mode}
    if steps is not None:
        body["steps"] = int(steps)
    if duration_s is not None:
        body["duration_s"] = float(duration_s)
    return _arm("arm_oom", replica_url, admin_key, body)


def arm_hang_step(replica_url: str, admin_key: str, duration_s: float = 60.0) -> dict:
    return _arm("arm_hang_step", replica_url, admin_key, {"kind": "hang_step", "duration_s": float(duration_s)})


def arm_slow_step(replica_url: str, admin_key: str, delay_ms: float) -> dict:
    return _arm("arm_slow_step", replica_url, admin_key, {"kind": "slow_step", "delay_ms": float(delay_ms)})


def arm_nan_weights(replica_url: str, admin_key: str, weight: str | None = None, layer: int = 0) -> dict:
    body: dict[str, Any] = {"kind": "nan_weights"}
    if weight:
        body["weight"] = weight
    else:
        body["layer"] = int(layer)
    return _arm("arm_nan_weights", replica_url, admin_key, body)


def clear_model_faults(replica_url: str, admin_key: str) -> dict:
    url = _faults_url(replica_url)
    try:
        answer = httpx.delete(url, headers=_auth(admin_key), timeout=HTTP_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as error:  # gone (killed, restarting): its faults went with its process
        return _record("clear_model_faults", replica_url, cleared=False,
                       reason=f"unreachable: {type(error).__name__}: {error}")
    if answer.status_code == 503:  # no engine (loading, or its core died): nothing armed to undo
        return _record("clear_model_faults", replica_url, cleared=False, reason=answer_message(answer))
    reply = _check(answer, "DELETE", url)
    cleared = [ended["kind"] for ended in reply["record"]["cleared"]]
    return _record("clear_model_faults", replica_url, cleared=True, kinds=cleared, armed=reply["armed"])


def armed_model_faults(replica_url: str, admin_key: str) -> list[str]:
    url = _faults_url(replica_url)
    try:
        answer = httpx.get(url, headers=_auth(admin_key), timeout=HTTP_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as error:
        raise LabError(f"GET {url} failed: {type(error).__name__}: {error}") from None
    return [fault["kind"] for fault in _check(answer, "GET", url)["armed"]]


def no_model_fault_armed(replica_url: str, admin_key: str) -> bool:
    return not armed_model_faults(replica_url, admin_key)


def replica_health(replica_url: str) -> dict:
    try:
        answer = httpx.get(f"{replica_url.rstrip('/')}/health", timeout=5.0, trust_env=False)
    except httpx.HTTPError as error:
        return {"status": None, "code": "unreachable", "message": f"{type(error).__name__}: {error}"}
    error = _error(answer)
    return {"status": answer.status_code, "code": error.get("code"), "message": error.get("message")}


def wait_for_replica_health(replica_url: str, status: int, timeout_s: float = 60.0) -> dict:
    status, start = int(status), time.monotonic()
    while True:
        seen = replica_health(replica_url)
        now = time.monotonic()
        if seen["status"] == status:
            return {**seen, "waited_s": now - start, "at_monotonic_s": now, "at_wall_s": time.time()}
        if now - start >= float(timeout_s):
            raise LabError(f"{replica_url}/health answered {seen['status']} ({seen['code']}), not {status}, "
                           f"for {float(timeout_s):g} s")
        time.sleep(POLL_S)


def _arm(action: str, replica_url: str, admin_key: str, body: dict) -> dict:
    url = _faults_url(replica_url)
    try:
        answer = httpx.post(url, headers=_auth(admin_key), json=body, timeout=HTTP_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as error:
        raise LabError(f"POST {url} failed: {type(error).__name__}: {error}") from None
    reply = _check(answer, "POST", url)
    record = {k: v for k, v in reply["record"].items() if k != "action"}
    return _record(action, replica_url, **record, armed=[fault["kind"] for fault in reply["armed"]])


def _record(action: str, replica_url: str, **detail: Any) -> dict:
    return FaultRecord(action, replica_url, "replica", detail).as_dict()


def _faults_url(replica_url: str) -> str:
    return f"{replica_url.rstrip('/')}/admin/faults"


def _auth(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def _check(answer: httpx.Response, method: str, url: str) -> dict:
    if answer.status_code == 404:
        raise LabError(f"{method} {url}: 404: the replica has no fault routes; start it with "
                       "`lab serve --enable-fault-injection --admin-key-hash <hash of the admin key>`")
    if answer.status_code != 200:
        raise LabError(f"{method} {url} answered {answer.status_code}: {answer_message(answer)}")
    return answer.json()


def _error(answer: httpx.Response) -> dict:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body.get("error") or {} if isinstance(body, dict) else {}


def answer_message(answer: httpx.Response) -> str:
    """An error answer's OpenAI `message`, else the start of its body."""
    return _error(answer).get("message") or answer.text[:300]
