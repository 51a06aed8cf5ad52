"""Without faults the fault proxy costs well under a millisecond per round trip on loopback (p50).

Small request/response round trips on one kept-alive connection, straight to an echo server and through a
real proxy process, interleaved in blocks so both see the same machine load (this machine's cores are
shared); the difference of the medians is the proxy's cost. The bound is generous for a loaded CI box:
the proxy's own path is one read and one write per chunk, tens of microseconds.
"""

from __future__ import annotations

import statistics
import time

from lab.chaos.proxy_client import start_fault_proxy
from tests.chaos.tcp_targets import connect, echo_server

ROUNDS, BLOCK = 400, 50
MAX_ADDED_P50_MS = 1.0


def round_trips_s(sock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(b"x" * 64)
        received = 0
        while received < 64:
            received += len(sock.recv(4096))
        times.append(time.perf_counter() - start)
    return times


def test_the_proxy_adds_well_under_a_millisecond_at_p50() -> None:
    with echo_server() as port, start_fault_proxy(port) as proxy:
        with connect(port) as direct, connect(proxy.listen_port) as proxied:
            round_trips_s(direct, BLOCK), round_trips_s(proxied, BLOCK)  # warm up both paths
            straight, through = [], []
            for _ in range(ROUNDS // BLOCK):
                straight += round_trips_s(direct, BLOCK)
                through += round_trips_s(proxied, BLOCK)
    added_ms = (statistics.median(through) - statistics.median(straight)) * 1000.0
    assert added_ms < MAX_ADDED_P50_MS, f"p50 direct {statistics.median(straight) * 1e3:.3f} ms, " \
                                        f"through the proxy {statistics.median(through) * 1e3:.3f} ms"
