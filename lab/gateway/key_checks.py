"""API key checks off the event loop: slow (pbkdf2) checks on a small thread pool, one per key at a time.

Contract: `KeyChecks(store)`; `await lookup(key)` returns what `KeyStore.lookup` would (a `KeyConfig`
or None), answering from the store's memory on the loop when it can (sha256 keys, keys verified
before, keys refused within the last minute) and otherwise running `KeyStore.check_slow` on a thread
pool of `workers` threads. Concurrent lookups of one key share one check (a flood of one wrong key
costs one check, then none while its refusal is remembered). At most `max_pending` distinct keys are
checked or waiting at once; past that a lookup raises a 503 `GatewayError` (`key_checks_busy`, with
Retry-After) rather than queue without bound. `slow_checks` counts the checks run. `close()` stops
the pool.

Why: a pbkdf2 check costs ~0.1 s of CPU by design; on the loop, a flood of wrong keys stalled every
request and `/ready` (8.2 s measured). hashlib's pbkdf2 releases the GIL, so a thread keeps the loop
free, and one worker by default leaves the other cores to the loop (and, on a 2-core host, one of them).
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor

from lab.gateway.auth import KeyStore
from lab.gateway.config import KeyConfig
from lab.gateway.errors import GatewayError

WORKERS = 1  # threads running slow checks
MAX_PENDING = 32  # distinct keys checked or waiting at once; ~3 s of pbkdf2 work on one thread


class KeyChecks:
    def __init__(self, store: KeyStore, workers: int = WORKERS, max_pending: int = MAX_PENDING) -> None:
        self.store, self.workers, self.max_pending = store, workers, max_pending
        self._pool: ThreadPoolExecutor | None = None  # started on the first slow check
        self._pending: dict[str, asyncio.Task] = {}  # key digest -> its check
        self.slow_checks = 0

    async def lookup(self, key: str | None) -> KeyConfig | None:
        answer = self.store.cached(key)
        if answer.known:
            return answer.key
        digest = hashlib.sha256(key.encode()).hexdigest()
        check = self._pending.get(digest)
        if check is None:
            if len(self._pending) >= self.max_pending:
                raise GatewayError(503, f"{self.max_pending} API key checks are already waiting; retry shortly",
                                   "service_unavailable", "key_checks_busy", headers={"Retry-After": "1"})
            check = self._pending[digest] = asyncio.get_running_loop().create_task(self._check(key, digest))
        # Shielded: a client that leaves cancels its own wait, never the check others share.
        return await asyncio.shield(check)

    async def _check(self, key: str, digest: str) -> KeyConfig | None:
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lab-key-check")
            self.slow_checks += 1
            found = await asyncio.get_running_loop().run_in_executor(self._pool, self.store.check_slow, key)
            self.store.remember(key, found)  # on the loop: the store's memory has one writer
            return found
        finally:
            del self._pending[digest]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
