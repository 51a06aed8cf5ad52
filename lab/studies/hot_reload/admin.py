"""The study's side of a replica's admin API: reloads, the live version, a plain completion.

Contract: `ReplicaAdmin(url, admin_key)` talks HTTP to one `lab serve --admin-key-hash ...` replica.
- `reload(source, seed, policy, timeout_s) -> ReloadCall`: one `POST /admin/reload`, timed on the client's
  wall clock (`sent_at`, `answered_at`: `time.time()`, the clock the replica stamps its records with). It
  never raises for a refused or failed reload: a 200 keeps the replica's record, anything else the HTTP
  status and the OpenAI-shaped error's `code` and `message` (or the transport error).
- `status()`: `GET /admin/reload` (`version`, `generation`, `reloading`, `recent` records);
  `wait_promoted(generation, timeout_s)`: polls it until the drain to `generation` has its `promoted`
  record, or returns None when the wait runs out.
- `served_version()`: `(version, generation)` of the first `/v1/models` card.
- `complete(model, prompt, max_tokens) -> Completion`: one non-streamed completion, never raising.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

POLL_S = 0.2


@dataclass(frozen=True)
class ReloadCall:
    sent_at: float  # client wall clock just before the POST
    answered_at: float  # ... and when its answer arrived
    status: int | None  # HTTP status; None: no answer (transport error)
    record: dict[str, Any] = field(default_factory=dict)  # the replica's record (200 only)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def client_s(self) -> float:
        return self.answered_at - self.sent_at

    @property
    def outcome(self) -> str:
        """The record's outcome (switched, draining), else `refused` for a 400, else `error`."""
        if self.status == 200:
            return str(self.record.get("outcome"))
        return "refused" if self.status == 400 and self.error_code == "reload_refused" else "error"


@dataclass(frozen=True)
class Completion:
    ok: bool
    status: int | None
    text: str = ""
    error: str | None = None


class ReplicaAdmin:
    def __init__(self, url: str, admin_key: str) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_key}"}

    def reload(self, source: str, seed: int | None, policy: str, timeout_s: float) -> ReloadCall:
        body: dict[str, Any] = {"source": source, "policy": policy}
        if seed is not None:
            body["seed"] = seed
        sent_at = time.time()
        try:
            answer = httpx.post(f"{self.url}/admin/reload", json=body, headers=self._headers, timeout=timeout_s,
                                trust_env=False)
        except httpx.HTTPError as error:
            return ReloadCall(sent_at, time.time(), None, error_code=type(error).__name__, error_message=str(error))
        answered_at = time.time()
        if answer.status_code == 200:
            return ReloadCall(sent_at, answered_at, 200, record=answer.json())
        code, message = _error(answer)
        return ReloadCall(sent_at, answered_at, answer.status_code, error_code=code, error_message=message)

    def status(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/admin/reload", headers=self._headers, timeout=30.0, trust_env=False)
        answer.raise_for_status()
        return answer.json()

    def wait_promoted(self, generation: int, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            for record in self.status()["recent"]:
                if record.get("outcome") == "promoted" and record.get("generation") == generation:
                    return record
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)

    def served_version(self) -> tuple[str, int]:
        answer = httpx.get(f"{self.url}/v1/models", timeout=30.0, trust_env=False)
        answer.raise_for_status()
        card = answer.json()["data"][0]
        return str(card["version"]), int(card["generation"])

    def complete(self, model: str, prompt: str = "Hot reload check", max_tokens: int = 4) -> Completion:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
        try:
            answer = httpx.post(f"{self.url}/v1/completions", json=body, timeout=120.0, trust_env=False)
        except httpx.HTTPError as error:
            return Completion(False, None, error=f"{type(error).__name__}: {error}")
        if answer.status_code != 200:
            return Completion(False, answer.status_code, error=answer.text[:300])
        return Completion(True, 200, text=answer.json()["choices"][0]["text"])


def _error(answer: httpx.Response) -> tuple[str | None, str]:
    try:
        error = answer.json()["error"]
        return error.get("code"), str(error.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, answer.text[:300]
