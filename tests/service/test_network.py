"""A replica's `network`: the gateway reaches it through a real fault proxy process, or inside a lab namespace.

Real processes throughout: replicas that need no engine (tests/service/metrics_upstream.py), the fault proxy
(`python -m lab.chaos.fault_proxy`), the gateway, Prometheus; the namespace test needs root, iproute2 and
iptables (what the netns backend needs, tc netem apart) and is skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from lab.errors import LabError
from lab.service.load import parse_spec
from lab.service.spec import ReplicaProcess
from lab.service.state import read_state
from lab.service.supervisor import Service
from tests.scheduling import NETWORK_NAMESPACES
from tests.service.helpers import AUTH, COMPLETION, UPSTREAM, alive, echo_spec, wait_for

pytestmark = NETWORK_NAMESPACES

HAS_PROMETHEUS = shutil.which("prometheus") is not None or Path("/usr/bin/prometheus").exists()
ECHO_ON_HOST = (sys.executable, str(UPSTREAM), "--host", "{host}", "--port", "{port}")


def netns_works() -> bool:
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("iptables")):
        return False
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True)
    return probe.returncode == 0


def complete(url: str) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json=COMPLETION, headers=AUTH, timeout=10, trust_env=False)


def replica_answering(service: Service) -> set[str]:
    return {complete(service.gateway_url).headers["x-lab-replica"] for _ in range(6)}


def test_a_proxied_replica_is_reached_through_its_supervised_fault_proxy(tmp_path: Path) -> None:
    spec = echo_spec(tmp_path, prometheus=False)
    spec = dataclasses.replace(spec, replicas=(dataclasses.replace(spec.replicas[0], network="proxy"), spec.replicas[1]))
    with Service(spec) as service:
        replica, proxy = service.replica("echo-0"), service.process("echo-0-proxy")
        assert (replica.network, proxy.kind, replica.proxy_control_url) == ("proxy", "proxy", proxy.url)
        assert replica.route_url != replica.url and service.replica("echo-1").route_url == service.replica("echo-1").url
        routes = {r["name"]: r["url"] for r in yaml.safe_load((service.log_dir / "gateway.yaml").read_text())["replicas"]}
        assert routes == {"echo-0": replica.route_url, "echo-1": service.replica("echo-1").url}
        assert httpx.get(proxy.url + "/faults", timeout=5).json()["target"].endswith(f":{replica.port}")
        stored = read_state(service.state_path).process("echo-0")
        assert (stored.route_url, stored.proxy_control_url) == (replica.route_url, proxy.url)
        assert complete(replica.route_url).json()["choices"][0]["text"] == "ok"  # the proxy relays to the replica

        os.killpg(proxy.pid, signal.SIGKILL)  # the supervisor restarts a proxy on its ports, like any process
        restarted = service.wait_ready("echo-0-proxy", 30, replaced_pid=proxy.pid)
        assert restarted.port == proxy.port and complete(replica.route_url).status_code == 200
    assert not alive(restarted.pid)


@pytest.mark.skipif(not (netns_works() and HAS_PROMETHEUS), reason="needs root, iproute2, iptables and prometheus")
def test_a_netns_replica_serves_from_its_namespace_and_the_namespace_goes_with_the_service(tmp_path: Path) -> None:
    from lab.chaos.network import clear_network_faults, partition
    from lab.chaos.probes import wait_for_replica_state

    spec = echo_spec(tmp_path)
    inside = ReplicaProcess("echo-0", ECHO_ON_HOST, network="netns")
    spec = dataclasses.replace(spec, replicas=(inside, spec.replicas[1]))
    with Service(spec) as service:
        replica = service.replica("echo-0")
        assert replica.network == "netns" and replica.url.startswith("http://10.231.")
        assert replica.namespace in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "echo-0" in replica_answering(service)  # the gateway reaches it over the veth pair
        targets = wait_for(lambda: [t for t in service.prometheus.targets() if t["labels"].get("replica") == "echo-0"
                                    and t["health"] == "up"], 30, "Prometheus scrapes the replica in its namespace")
        assert targets[0]["labels"]["instance"] == replica.url.removeprefix("http://")

        partition("refuse", namespace=replica.namespace)  # the kernel's own firewall on that link only
        try:
            wait_for_replica_state(service.gateway_url, "echo-0", "ejected", timeout_s=20)
            assert replica_answering(service) == {"echo-1"}
        finally:
            clear_network_faults(namespace=replica.namespace)
        wait_for_replica_state(service.gateway_url, "echo-0", "healthy", timeout_s=20)
        name = replica.namespace
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.parametrize(("replicas", "message"), [
    ([{"name": "e", "command": list(ECHO_ON_HOST), "network": "wifi"}], "replicas[0].network: expected one of"),
    ([{"name": "e", "command": [sys.executable, "up.py", "--port", "{port}"], "network": "netns"}], "must contain {host}"),
    ([{"name": "e", "command": list(ECHO_ON_HOST), "network": "proxy"},
      {"name": "e-proxy", "command": list(ECHO_ON_HOST)}], "repeated: ['e-proxy']"),
])
def test_network_mistakes_are_named_before_anything_starts(replicas: list, message: str) -> None:
    with pytest.raises(LabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec({"name": "s", "replicas": replicas}, Path("."))


def test_a_lab_serve_replica_in_a_namespace_listens_on_the_namespace_address() -> None:
    spec = parse_spec({"name": "s", "replicas": [{"model": "tiny", "network": "netns"}]}, Path("."))
    command = spec.replicas[0].command
    assert command[command.index("--host") + 1] == "{host}"
    assert spec.replicas[0].network == "netns"
