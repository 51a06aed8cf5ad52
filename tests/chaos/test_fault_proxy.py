"""The fault proxy, a real `python -m lab.chaos.fault_proxy` process: transparent without faults, and each
fault doing to TCP what it says, set and cleared over its HTTP control API."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from lab.chaos.proxy_client import (
    FaultProxyProcess, clear_proxy_faults, proxy_status, set_proxy_fault, start_fault_proxy,
)
from lab.errors import LabError
from tests.chaos.tcp_targets import connect, echo_server, paced_server, recv_all


@pytest.fixture
def echo_proxy() -> Iterator[FaultProxyProcess]:
    with echo_server() as port, start_fault_proxy(port) as proxy:
        yield proxy


def round_trip_s(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        received += sock.recv(65536)
    return time.perf_counter() - start


def test_bytes_pass_through_exactly_with_the_half_close(echo_proxy: FaultProxyProcess) -> None:
    payload = os.urandom(1 << 20)
    with connect(echo_proxy.listen_port) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the echo server closes only after our EOF reaches it
        assert recv_all(sock) == payload


def test_a_stream_passes_through_unbuffered() -> None:
    chunks = [b"data: {\"n\": 1}\n\n", b"data: {\"n\": 2}\n\n"]
    with paced_server(chunks, gap_s=0.6) as port, start_fault_proxy(port) as proxy, connect(proxy.listen_port) as sock:
        start = time.monotonic()
        first = sock.recv(65536)
        first_at = time.monotonic() - start
        rest = recv_all(sock)
    assert first == chunks[0] and rest == chunks[1]
    assert first_at < 0.3  # the first event arrived long before the second was even sent


def test_latency_delays_each_direction_and_clearing_removes_it(echo_proxy: FaultProxyProcess) -> None:
    with connect(echo_proxy.listen_port) as sock:
        set_proxy_fault(echo_proxy.control_url, "latency", {"latency_ms": 100})
        delayed = round_trip_s(sock)
        clear_proxy_faults(echo_proxy.control_url, "latency")
        cleared = round_trip_s(sock)
    assert delayed >= 0.2  # 100 ms to the target and 100 ms back
    assert cleared < 0.1


def test_jittered_chunks_keep_their_order(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "latency", {"latency_ms": 20, "jitter_ms": 19})
    pieces = [f"<{i}>".encode() for i in range(60)]
    with connect(echo_proxy.listen_port) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"".join(pieces)


def test_a_refusing_partition_refuses_new_connections_and_resets_open_ones(echo_proxy: FaultProxyProcess) -> None:
    with connect(echo_proxy.listen_port) as open_sock:
        round_trip_s(open_sock)
        set_proxy_fault(echo_proxy.control_url, "partition", {"mode": "refuse"})
        with pytest.raises(ConnectionResetError):
            open_sock.recv(16)
    with pytest.raises(ConnectionRefusedError):
        connect(echo_proxy.listen_port)
    clear_proxy_faults(echo_proxy.control_url)
    with connect(echo_proxy.listen_port) as sock:
        assert round_trip_s(sock) < 1.0


def test_a_blackhole_holds_data_until_the_partition_heals(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "partition", {"mode": "blackhole"})
    with connect(echo_proxy.listen_port) as sock:
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        clear_proxy_faults(echo_proxy.control_url, "partition")
        sock.settimeout(5.0)
        assert sock.recv(16) == b"held"  # delivered after the heal, as TCP retransmission would


def test_every_new_connection_is_reset_at_fraction_one(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "reset", {"new_connection_fraction": 1.0})
    with pytest.raises(ConnectionError):  # a reset; on loopback it may even beat connect()'s return
        with connect(echo_proxy.listen_port) as sock:
            sock.sendall(b"x")
            sock.recv(16)
    assert proxy_status(echo_proxy.control_url)["stats"]["connections_reset"] == 1


def test_a_fraction_of_new_connections_is_reset(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "reset", {"new_connection_fraction": 0.5})
    outcomes = []
    for _ in range(40):
        try:
            with connect(echo_proxy.listen_port) as sock:
                outcomes.append(round_trip_s(sock) < 5)
        except ConnectionError:  # reset (or a broken pipe when the RST wins the race with our send)
            outcomes.append(False)
    assert 5 <= sum(outcomes) <= 35  # Binomial(40, 0.5): outside this once in ~10^5 runs


def test_established_connections_are_cut_once(echo_proxy: FaultProxyProcess) -> None:
    with connect(echo_proxy.listen_port) as sock:
        round_trip_s(sock)
        set_proxy_fault(echo_proxy.control_url, "reset", {"established": True})
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    with connect(echo_proxy.listen_port) as fresh:  # a connection made after the cut is left alone
        assert round_trip_s(fresh) < 1.0


def test_after_bytes_cuts_a_response_mid_stream() -> None:
    body = bytes(range(256)) * 8  # 2048 bytes
    with paced_server([body[:1000], body[1000:]], gap_s=0.05) as port, start_fault_proxy(port) as proxy:
        set_proxy_fault(proxy.control_url, "reset", {"after_bytes": 300})
        received = b""
        with connect(proxy.listen_port) as sock, pytest.raises(ConnectionResetError):
            while data := sock.recv(65536):
                received += data
    assert received == body[:300]


def test_lost_connections_are_held_until_the_loss_clears(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "loss", {"connection_fraction": 1.0})
    with connect(echo_proxy.listen_port) as sock:
        sock.sendall(b"late")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        clear_proxy_faults(echo_proxy.control_url, "loss")
        sock.settimeout(5.0)
        assert sock.recv(16) == b"late"


def test_lost_chunks_stall_for_the_retransmission_time(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "loss", {"chunk_fraction": 1.0, "chunk_stall_ms": 300,
                                                     "direction": "to_target"})
    with connect(echo_proxy.listen_port) as sock:
        assert 0.3 <= round_trip_s(sock) < 2.0


def test_the_control_api_names_bad_input(echo_proxy: FaultProxyProcess) -> None:
    with pytest.raises(LabError, match="unknown field.*latency_msec"):
        set_proxy_fault(echo_proxy.control_url, "latency", {"latency_msec": 5})
    response = httpx.put(f"{echo_proxy.control_url}/faults/latency", content=b"{not json", trust_env=False)
    assert response.status_code == 400 and "error" in response.json()
    response = httpx.get(f"{echo_proxy.control_url}/nowhere", trust_env=False)
    assert response.status_code == 404 and "routes" in response.json()["error"]


def test_status_lists_active_faults_and_clear_all_empties_it(echo_proxy: FaultProxyProcess) -> None:
    set_proxy_fault(echo_proxy.control_url, "latency", {"latency_ms": 5})
    set_proxy_fault(echo_proxy.control_url, "loss", {"chunk_fraction": 0.1})
    assert sorted(proxy_status(echo_proxy.control_url)["faults"]) == ["latency", "loss"]
    assert clear_proxy_faults(echo_proxy.control_url)["faults"] == {}


def test_an_unreachable_control_api_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabError, match="not reachable"):
        proxy_status(f"http://127.0.0.1:{port}")
