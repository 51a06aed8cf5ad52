"""API keys: hashed at rest, resolved to a tier per request.

Contract: `hash_key(key)` gives the string stored in the config, either `sha256:<hex>` (the
default: API keys are long random tokens, so a plain digest resists guessing as well as a salted
one) or `pbkdf2_sha256$<iterations>$<salt>$<hex>` for keys a person chose. `verify_key(key, stored)`
compares in constant time. `KeyStore.lookup(key)` returns the `KeyConfig` of a presented key or
None; the tier comes from this lookup only, never from anything else the client sends. A store with
an `anonymous_tier` returns, for a request with no key at all, the key `anonymous` of that tier (one
set of key buckets for all of them); a wrong key is still None. `cached(key)` answers from memory
only (`CacheAnswer.known` False: a slow check is needed), `check_slow(key)` runs the slow checks
(thread-safe: it reads nothing that changes), `remember(key, found)` stores the verdict; `lookup` is
the three in a row, on the caller's thread. `lab.gateway.key_checks` runs the slow checks off the event loop.
`bearer_token(headers)` reads `Authorization: Bearer <key>` (or OpenAI-style `api-key`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

from lab.gateway.config import ANONYMOUS_KEY_NAME, KeyConfig

PBKDF2_ITERATIONS = 200_000


def hash_key(key: str, scheme: str = "sha256", salt: str | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    if not key:
        raise ValueError("an API key must not be empty")
    if scheme == "sha256":
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    if scheme == "pbkdf2":
        salt = salt if salt is not None else secrets.token_hex(16)
        digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt.encode(), iterations).hex()
        return f"pbkdf2_sha256${iterations}${salt}${digest}"
    raise ValueError(f"unknown key hash scheme {scheme!r}; known: ['sha256', 'pbkdf2']")


def verify_key(key: str, stored: str) -> bool:
    if stored.startswith("sha256:"):
        return hmac.compare_digest(hash_key(key, "sha256"), stored)
    if stored.startswith("pbkdf2_sha256$"):
        try:
            _, iterations, salt, _digest = stored.split("$")
            return hmac.compare_digest(hash_key(key, "pbkdf2", salt, int(iterations)), stored)
        except ValueError:
            return False
    return False


def check_hash_format(stored: str) -> bool:
    """True when `stored` looks like a hash this module can verify (for config checks)."""
    if stored.startswith("sha256:"):
        return len(stored) == 7 + 64
    parts = stored.split("$")
    return len(parts) == 4 and parts[0] == "pbkdf2_sha256" and parts[1].isdigit()


class CacheAnswer(NamedTuple):  # a tuple: built on every request, so as cheap as can be
    known: bool  # False: only the slow checks can tell
    key: KeyConfig | None = None


_UNKNOWN = CacheAnswer(False)
_REFUSED = CacheAnswer(True)


class KeyStore:
    """Presented key -> KeyConfig, with verdicts remembered by the sha256 of the presented key.

    pbkdf2 costs ~0.1 s per check by design. Keys that passed are remembered (at most `cache_size`: only
    real keys get in, so guessing cannot grow it); keys that failed are remembered for `refused_ttl_s` in
    an LRU of `refused_size` entries, so a flood of one wrong key costs one check, and a flood of many
    evicts only other wrong keys. Never the key itself, only its digest.
    """

    def __init__(self, keys: tuple[KeyConfig, ...], cache_size: int = 4096, anonymous_tier: str | None = None,
                 refused_size: int = 4096, refused_ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._anonymous = None if anonymous_tier is None else KeyConfig(ANONYMOUS_KEY_NAME, "", anonymous_tier)
        self._fast = {k.hash: k for k in keys if k.hash.startswith("sha256:")}
        self._slow = tuple(k for k in keys if not k.hash.startswith("sha256:"))
        self._verified: dict[str, KeyConfig] = {}
        self._cache_size = cache_size
        self._refused: OrderedDict[str, float] = OrderedDict()  # digest -> when the verdict expires
        self._refused_size, self._refused_ttl_s, self._clock = refused_size, refused_ttl_s, clock

    def cached(self, key: str | None) -> CacheAnswer:
        if not key:
            return CacheAnswer(True, self._anonymous)
        digest = hash_key(key, "sha256")
        found = self._fast.get(digest) or self._verified.get(digest)
        if found is not None:
            return CacheAnswer(True, found)
        if not self._slow:
            return _REFUSED
        expires = self._refused.get(digest)
        if expires is not None:
            if self._clock() < expires:
                self._refused.move_to_end(digest)
                return _REFUSED
            del self._refused[digest]
        return _UNKNOWN

    def check_slow(self, key: str) -> KeyConfig | None:
        """The slow (salted, iterated) checks; safe to run on any thread."""
        for entry in self._slow:
            if verify_key(key, entry.hash):
                return entry
        return None

    def remember(self, key: str, found: KeyConfig | None) -> None:
        digest = hash_key(key, "sha256")
        if found is not None:
            if len(self._verified) < self._cache_size:
                self._verified[digest] = found
            return
        self._refused[digest] = self._clock() + self._refused_ttl_s
        self._refused.move_to_end(digest)
        while len(self._refused) > self._refused_size:
            self._refused.popitem(last=False)

    def lookup(self, key: str | None) -> KeyConfig | None:
        """The plain path, on the caller's thread (slow checks included)."""
        answer = self.cached(key)
        if answer.known:
            return answer.key
        found = self.check_slow(key)
        self.remember(key, found)
        return found


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return headers.get("api-key") or None
