"""The ASGI lifespan protocol, driven from outside the app (for `lab.gateway.http_server`).

Contract: `Lifespan(app, state)`; `await startup()` runs the app's lifespan scope until it reports
`lifespan.startup.complete` (raises `RuntimeError` on `lifespan.startup.failed`); `await shutdown()`
sends `lifespan.shutdown` and waits for the app to finish it. An app that does not speak lifespan
(it raises on the scope) is started and stopped as a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("lab.gateway.http_server")


class Lifespan:
    """Drives the app's lifespan protocol; an app without one (it raises on the scope) is fine."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app, self.state = app, state
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.started, self.stopped = asyncio.Event(), asyncio.Event()
        self.failure = ""
        self.task: asyncio.Task | None = None

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind.startswith("lifespan.startup"):
            self.failure = message.get("message", "startup failed") if kind.endswith("failed") else ""
            self.started.set()
        elif kind.startswith("lifespan.shutdown"):
            self.stopped.set()

    async def _main(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state},
                           self.inbox.get, self._send)
        except BaseException as error:  # noqa: BLE001 - an app without lifespan support
            if not self.started.is_set():
                log.debug("ASGI app has no lifespan: %s", error)
        finally:
            self.started.set()
            self.stopped.set()

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failure:
            raise RuntimeError(f"ASGI lifespan startup failed: {self.failure}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()
