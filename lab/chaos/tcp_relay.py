"""The fault proxy's relay plumbing: one direction's ordered, possibly delayed writer, and an RST close.

Contract: `Outbox(writer, on_error)` writes chunks to one side of a relayed connection. `send(data,
delay_s)` with no delay and nothing queued writes straight through (the transparent path: no queue, no
extra task); otherwise the chunk is queued with a due time no earlier than the chunk before it (a delayed
chunk never overtakes an earlier one, as TCP's in-order delivery would not let it) and a flusher task
writes it when due. `send(EOF, ...)` queues the half-close. `finish()` waits until all is written; a
write error calls `on_error` (the link is reset). `reset_now(writer)` closes a connection with an RST
(SO_LINGER on, zero timeout) instead of a FIN.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque

EOF = None  # the end-of-stream marker: write_eof() in its turn


def reset_now(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: SO_LINGER on with a zero timeout makes close() abort the connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Outbox:
    """One direction's writer: straight through when nothing waits, else an ordered queue of due times."""

    def __init__(self, writer: asyncio.StreamWriter, on_error) -> None:
        self.writer, self.on_error = writer, on_error
        self.pending: deque[tuple[float, bytes | None]] = deque()
        self.last_due = 0.0
        self.flusher: asyncio.Task | None = None

    async def send(self, data: bytes | None, delay_s: float) -> None:
        if delay_s <= 0 and not self.pending:  # the transparent path: no queue, no extra task
            await self._write(data)
            return
        loop = asyncio.get_running_loop()
        self.last_due = max(loop.time() + delay_s, self.last_due)  # never overtake the chunk before
        self.pending.append((self.last_due, data))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())

    async def _write(self, data: bytes | None) -> None:
        if data is EOF:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            return
        self.writer.write(data)
        await self.writer.drain()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                due, data = self.pending[0]
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                self.pending.popleft()
                await self._write(data)
        except (ConnectionError, OSError):
            self.on_error()

    async def finish(self) -> None:
        """Wait until everything queued has been written."""
        if self.flusher is not None:
            await self.flusher
