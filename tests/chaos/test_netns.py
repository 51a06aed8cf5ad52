"""The netns backend on the real kernel: a namespace with a veth pair, a replica inside, iptables faults.

Skipped, with the probe's reason, where namespaces or iptables do not work (not root, tools missing). Latency
needs the kernel's sch_netem: where it is missing the fault must say "unavailable", never pretend.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from lab.chaos import network
from lab.chaos.backend import network_fault_backend
from lab.chaos.netns import NetworkNamespace, delete_namespace
from lab.chaos.netns_faults import FaultUnavailable
from tests.scheduling import NETWORK_NAMESPACES
from lab.errors import LabError

PROBE = network_fault_backend()
CHECKS = PROBE["checks"]
pytestmark = [pytest.mark.skipif(not all(CHECKS.get(k) == "ok" for k in ("root", "netns", "veth", "iptables_rule")),
                                 reason=f"network namespaces with iptables do not work here: {PROBE['reason']}"),
              NETWORK_NAMESPACES]
PORT = 18080


def ip_output(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True).stdout


@pytest.fixture
def replica_ns(tmp_path) -> Iterator[NetworkNamespace]:
    """A namespace with the minimal upstream listening inside on PORT."""
    with NetworkNamespace("lab-test") as ns:
        ns.run([sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--host", "0.0.0.0", "--port", str(PORT)],
               stdout=open(tmp_path / "upstream.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not answers(ns) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answers(ns)
        yield ns


def answers(ns: NetworkNamespace, timeout_s: float = 0.5) -> bool:
    try:
        response = httpx.get(f"http://{ns.namespace_ip}:{PORT}/v1/models", timeout=timeout_s, trust_env=False)
        return response.status_code == 200
    except httpx.HTTPError:
        return False


def connect_error(ns: NetworkNamespace, timeout_s: float = 0.5) -> type[BaseException] | None:
    try:
        socket.create_connection((ns.namespace_ip, PORT), timeout=timeout_s).close()
    except OSError as error:
        return type(error)
    return None


def test_the_replica_inside_is_reached_over_the_veth(replica_ns: NetworkNamespace) -> None:
    assert replica_ns.host_ip in ip_output("-4", "addr", "show", "dev", replica_ns.host_ifname)
    assert answers(replica_ns)


def test_destroy_removes_the_namespace_the_veth_and_the_processes(tmp_path) -> None:
    ns = NetworkNamespace("lab-test").create()
    sleeper = ns.run(["sleep", "60"])
    ns.destroy()
    assert "lab-test" not in ip_output("netns", "list")
    assert "lab-test-h" not in ip_output("link", "show")
    assert sleeper.poll() is not None


def test_a_create_that_fails_halfway_leaves_no_namespace() -> None:
    # A host interface already named like the namespace's veth makes the veth step fail after `netns add`.
    subprocess.run(["ip", "link", "add", "lab-half-h", "type", "veth", "peer", "name", "lab-half-p"], check=True)
    try:
        with pytest.raises(LabError, match="lab-half-h"):
            NetworkNamespace("lab-half").create()
        assert "lab-half" not in ip_output("netns", "list")
    finally:
        subprocess.run(["ip", "link", "del", "lab-half-h"], capture_output=True)


def test_an_existing_namespace_is_never_taken_over() -> None:
    with NetworkNamespace("lab-mine"):
        with pytest.raises(LabError, match="lab-mine"):
            NetworkNamespace("lab-mine").create()
        assert "lab-mine" in ip_output("netns", "list")  # the failed create did not delete it


def test_only_lab_namespaces_can_be_named() -> None:
    with pytest.raises(LabError, match="lab-<1 to 8"):
        delete_namespace("docker0")


def test_a_refusing_partition_refuses_and_clears(replica_ns: NetworkNamespace) -> None:
    record = network.partition("refuse", namespace=replica_ns.name)
    assert record["backend"] == "netns"
    assert connect_error(replica_ns) is ConnectionRefusedError
    network.clear_network_faults(namespace=replica_ns.name)
    assert answers(replica_ns)


def test_a_blackhole_partition_times_out_and_clears(replica_ns: NetworkNamespace) -> None:
    network.partition("blackhole", namespace=replica_ns.name)
    assert connect_error(replica_ns) in (TimeoutError, socket.timeout)
    network.clear_network_faults("partition", namespace=replica_ns.name)
    assert answers(replica_ns, timeout_s=5.0)


def test_resetting_every_new_connection_refuses_it(replica_ns: NetworkNamespace) -> None:
    network.reset_connections(new_connection_fraction=1.0, namespace=replica_ns.name)
    assert connect_error(replica_ns) is ConnectionRefusedError  # an RST in answer to the SYN


def test_established_connections_are_reset(replica_ns: NetworkNamespace) -> None:
    with socket.create_connection((replica_ns.namespace_ip, PORT), timeout=2) as sock:
        network.reset_connections(established=True, namespace=replica_ns.name)
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
            sock.recv(1024)


def test_dropped_syns_hold_new_connections(replica_ns: NetworkNamespace) -> None:
    network.add_loss(connection_fraction=1.0, namespace=replica_ns.name)
    assert connect_error(replica_ns) in (TimeoutError, socket.timeout)
    network.clear_network_faults("loss", namespace=replica_ns.name)
    assert answers(replica_ns, timeout_s=5.0)


def test_latency_is_real_or_unavailable(replica_ns: NetworkNamespace) -> None:
    if CHECKS.get("netem") != "ok":
        with pytest.raises(FaultUnavailable, match="^unavailable: tc netem"):
            network.add_latency(50, namespace=replica_ns.name)
        return
    network.add_latency(100, namespace=replica_ns.name)
    start = time.monotonic()
    assert answers(replica_ns, timeout_s=5.0)
    assert time.monotonic() - start >= 0.2


PACED_SERVER = """
import socket, time
server = socket.create_server(("0.0.0.0", {port}))
conn, _ = server.accept()
for _ in range(20):
    conn.sendall(b"x" * 100)
    time.sleep(0.1)
"""


def test_after_bytes_cuts_a_slow_answer_midway(replica_ns: NetworkNamespace) -> None:
    port = PORT + 1
    server = replica_ns.run([sys.executable, "-c", PACED_SERVER.format(port=port)])
    network.reset_connections(after_bytes=600, namespace=replica_ns.name)  # IP bytes of the reply direction
    received = b""
    for _ in range(200):  # the server inside needs a moment to listen
        try:
            sock = socket.create_connection((replica_ns.namespace_ip, port), timeout=5)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        pytest.fail("the paced server inside the namespace never listened")
    with sock, pytest.raises(ConnectionResetError):
        while data := sock.recv(4096):
            received += data
    assert 0 < len(received) < 2000
    server.kill()
