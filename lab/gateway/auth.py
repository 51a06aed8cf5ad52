"""API keys: hashed at rest, resolved to a tier per request.

Contract: `hash_key(key)` gives the string stored in the config, either `sha256:<hex>` (the
default: API keys are long random tokens, so a plain digest resists guessing as well as a salted
one) or `pbkdf2_sha256$<iterations>$<salt>$<hex>` for keys a person chose. `verify_key(key, stored)`
compares in constant time. `KeyStore.lookup(key)` returns the `KeyConfig` of a presented key or
None; the tier comes from this lookup only, never from anything else the client sends. A store with
an `anonymous_tier` returns, for a request with no key at all, the key `anonymous` of that tier (one
set of key buckets for all of them); a wrong key is still None.
`bearer_token(headers)` reads `Authorization: Bearer <key>` (or OpenAI-style `api-key`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

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


class KeyStore:
    """Presented key -> KeyConfig, with verified keys remembered by digest.

    pbkdf2 costs ~0.1 s per check by design; remembering successful lookups (keyed by the sha256
    of the presented key, never the key itself) keeps it off the request path after the first call.
    Failures are not remembered, so the cache cannot be grown by guessing.
    """

    def __init__(self, keys: tuple[KeyConfig, ...], cache_size: int = 4096, anonymous_tier: str | None = None) -> None:
        self._keys = keys
        self._anonymous = None if anonymous_tier is None else KeyConfig(ANONYMOUS_KEY_NAME, "", anonymous_tier)
        self._fast = {k.hash: k for k in keys if k.hash.startswith("sha256:")}
        self._slow = [k for k in keys if not k.hash.startswith("sha256:")]
        self._verified: dict[str, KeyConfig] = {}
        self._cache_size = cache_size

    def lookup(self, key: str | None) -> KeyConfig | None:
        if not key:
            return self._anonymous
        digest = hash_key(key, "sha256")
        found = self._fast.get(digest) or self._verified.get(digest)
        if found is not None:
            return found
        for entry in self._slow:
            if verify_key(key, entry.hash):
                if len(self._verified) < self._cache_size:
                    self._verified[digest] = entry
                return entry
        return None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return headers.get("api-key") or None
