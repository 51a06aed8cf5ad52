"""A fault-injecting TCP proxy between a gateway and one replica, controlled over HTTP.

    python -m lab.chaos.fault_proxy --listen-port P --target-host 127.0.0.1 --target-port T --control-port C

Contract: accepts TCP on the listen port and relays each connection to the target, byte for byte, each
chunk written as soon as it is read (an SSE stream passes through unbuffered), half-closes forwarded.
Faults (`lab.chaos.network_faults`: latency, loss, reset, partition; several kinds at once) are set
and cleared on the control port:
    GET    /health              {"ok": true}
    GET    /faults              the active faults, the listen and target addresses, counters
    PUT    /faults/<kind>       JSON fields of that kind (replaces the kind's earlier setting)
    DELETE /faults/<kind>       clear one kind;   DELETE /faults: clear all
A bad request is a 400 naming the problem. Port 0 picks a free port; once both ports listen, the
process prints one JSON line `{"listen_port", "control_port", "target"}` on stdout. Delayed chunks keep
their order (a chunk waits for the one before it, as TCP's in-order delivery does). Randomness (which
connection is reset or held, jitter) comes from `--seed`. SIGTERM or SIGINT stops it.
`lab.chaos.proxy_client` starts it and calls its API from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from collections import Counter

from lab.chaos.control_http import serve_control
from lab.chaos.network_faults import Fault, Latency, Loss, Partition, Reset, describe, parse_fault
from lab.chaos.tcp_relay import EOF, Outbox, reset_now
from lab.errors import LabError

CHUNK_BYTES = 64 * 1024


class _Link:
    def __init__(self, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
        self.client, self.target = client, target
        self.bytes_from_target = 0
        self.aborted = False

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            reset_now(self.client)
            reset_now(self.target)


class FaultProxy:
    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int, seed: int = 0) -> None:
        self.listen_host, self.listen_port = listen_host, listen_port
        self.target_host, self.target_port = target_host, target_port
        self.rng = random.Random(seed)
        self.faults: dict[str, Fault] = {}
        self.links: set[_Link] = set()
        self.stats: Counter[str] = Counter()
        self.server: asyncio.AbstractServer | None = None
        self.partition_open = asyncio.Event()  # cleared while a blackhole partition holds everything
        self.loss_open = asyncio.Event()  # cleared while held (lost) new connections wait
        self._apply()

    async def listen(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port, reuse_address=True)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    def _apply(self) -> None:
        partition, loss = self.faults.get("partition"), self.faults.get("loss")
        blackhole = isinstance(partition, Partition) and partition.mode == "blackhole"
        holding = isinstance(loss, Loss) and loss.connection_fraction > 0
        for event, is_open in ((self.partition_open, not blackhole), (self.loss_open, not holding)):
            event.set() if is_open else event.clear()

    def _cut_all(self, counter: str) -> None:
        for link in list(self.links):
            link.abort()
            self.stats[counter] += 1

    async def _sync_listener(self) -> None:
        partition = self.faults.get("partition")
        refuse = isinstance(partition, Partition) and partition.mode == "refuse"
        if refuse and self.server is not None:
            self.server.close()  # nobody listens: the kernel refuses new connections
            self.server = None
            self._cut_all("connections_cut")
        elif not refuse and self.server is None:
            await self.listen()

    async def set_fault(self, fault: Fault) -> None:
        self.faults[fault.kind] = fault
        self._apply()
        if isinstance(fault, Reset) and fault.established:
            self._cut_all("connections_cut")
        await self._sync_listener()

    async def clear(self, kind: str | None = None) -> list[str]:
        cleared = [k for k in self.faults if kind in (None, k)]
        for k in cleared:
            del self.faults[k]
        self._apply()
        await self._sync_listener()
        return cleared

    def status(self) -> dict:
        return {"listen": f"{self.listen_host}:{self.listen_port}", "target": f"{self.target_host}:{self.target_port}",
                "faults": {kind: describe(f) for kind, f in self.faults.items()},
                "stats": {**self.stats, "connections_open": len(self.links)}}

    def _delay_s(self, direction: str) -> float:
        delay_ms = 0.0
        latency, loss = self.faults.get("latency"), self.faults.get("loss")
        if isinstance(latency, Latency) and latency.applies(direction):
            delay_ms += max(0.0, latency.latency_ms + self.rng.uniform(-latency.jitter_ms, latency.jitter_ms))
            self.stats["chunks_delayed"] += 1
        if isinstance(loss, Loss) and loss.applies(direction) and self.rng.random() < loss.chunk_fraction:
            delay_ms += loss.chunk_stall_ms
            self.stats["chunks_stalled"] += 1
        return delay_ms / 1000.0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections_accepted"] += 1
        reset, loss = self.faults.get("reset"), self.faults.get("loss")
        if isinstance(reset, Reset) and self.rng.random() < reset.new_connection_fraction:
            self.stats["connections_reset"] += 1
            reset_now(writer)
            return
        if isinstance(loss, Loss) and self.rng.random() < loss.connection_fraction:
            self.stats["connections_held"] += 1
            await self.loss_open.wait()
        await self.partition_open.wait()
        try:
            target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.stats["upstream_connect_failed"] += 1  # the target is down: the client sees what TCP would, an RST
            reset_now(writer)
            return
        link = _Link(writer, target_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._pump(link, reader, target_writer, "to_target"),
                                 self._pump(link, target_reader, writer, "from_target"))
        finally:
            self.links.discard(link)
            for w in (writer, target_writer):
                w.close()

    async def _pump(self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    direction: str) -> None:
        outbox = Outbox(sink, link.abort)
        try:
            while not link.aborted:
                data = await source.read(CHUNK_BYTES)
                if not data:
                    await outbox.send(EOF, 0.0)
                    break
                if not self.partition_open.is_set():
                    await self.partition_open.wait()  # held, as TCP holds unacknowledged data
                self.stats[f"bytes_{direction}"] += len(data)
                reset = self.faults.get("reset")
                if direction == "from_target" and isinstance(reset, Reset) and reset.after_bytes is not None:
                    remaining = max(0, reset.after_bytes - link.bytes_from_target)
                    if len(data) >= remaining:
                        if remaining:
                            await outbox.send(data[:remaining], self._delay_s(direction))
                        await outbox.finish()
                        self.stats["connections_cut"] += 1
                        link.abort()
                        break
                    link.bytes_from_target += len(data)
                await outbox.send(data, self._delay_s(direction))
            await outbox.finish()
        except (ConnectionError, OSError):
            link.abort()

    async def handle_control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts == ["health"] and method == "GET":
            return 200, {"ok": True}
        if parts == ["faults"] and method in ("GET", "DELETE"):
            if method == "DELETE":
                await self.clear()
            return 200, self.status()
        if len(parts) == 2 and parts[0] == "faults" and method in ("PUT", "DELETE"):
            if method == "DELETE":
                await self.clear(parts[1])
                return 200, self.status()
            try:
                fields = json.loads(body or b"{}")
                await self.set_fault(parse_fault(parts[1], fields))
            except (ValueError, LabError) as error:  # json.JSONDecodeError is a ValueError
                return 400, {"error": str(error)}
            return 200, self.status()
        return 404, {"error": f"no route {method} {path}; routes: GET /health, GET|DELETE /faults, "
                              "PUT|DELETE /faults/<latency|loss|reset|partition>"}


async def serve(args: argparse.Namespace) -> None:
    proxy = FaultProxy(args.listen_host, args.listen_port, args.target_host, args.target_port, args.seed)
    await proxy.listen()
    control = await serve_control(args.control_host, args.control_port, proxy.handle_control)
    control_port = control.sockets[0].getsockname()[1]
    print(json.dumps({"listen_port": proxy.listen_port, "control_port": control_port,
                      "target": f"{args.target_host}:{args.target_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    control.close()
    if proxy.server is not None:
        proxy.server.close()
    proxy._cut_all("connections_cut")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: pick a free one), got {port}")
    return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.chaos.fault_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=_port, required=True, help="0: pick a free port")
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-port", type=_port, required=True)
    parser.add_argument("--control-host", default="127.0.0.1")
    parser.add_argument("--control-port", type=_port, required=True, help="0: pick a free port")
    parser.add_argument("--seed", type=int, default=0, help="seeds which connections and chunks get a fault")
    args = parser.parse_args(argv)
    if args.target_port == 0:
        parser.error("--target-port must name the replica's port (1..65535)")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
