"""How the gateway reaches a replica: directly, through a fault proxy process, or inside a lab network namespace.

Contract: a replica's `network` (`ReplicaProcess.network`, the YAML's `replicas[i].network`) becomes a
`ReplicaLink` at start (`plan_link`):
- "direct" (default): the replica listens on 127.0.0.1:<port> and the gateway calls it there.
- "proxy": a fault proxy process (`python -m lab.chaos.fault_proxy`, `proxy_command`) named
  `<replica>-proxy` listens on its own port of 127.0.0.1 and relays every byte to the replica; the gateway
  calls the proxy, so a drill sets latency, loss, resets or a partition on that one link through the
  proxy's control API (state.json: the proxy process's `url`, and the replica's `proxy_control_url`). It is
  supervised like the others, restarted on the same ports (a restart clears its faults). Prometheus and
  the supervisor's readiness probe reach the replica directly: the fault is between gateway and replica.
- "netns": the replica runs inside a lab network namespace (`namespace_name`: `lab-` + 8 hex digits of the
  service and replica names, so a restart or `lab down` finds it again) joined to the host by a veth pair;
  it listens on the namespace's address (`{host}` in its command), where the gateway, Prometheus and the
  readiness probe reach it, so the kernel's own tools (iptables, tc netem) can fault that link. Needs root
  and iproute2. `create_namespace` deletes a namespace of that name left by a killed supervisor, then
  creates it; `delete_namespace` removes it (the processes inside, the veth pair, the namespace).
Why processes, not imports: lab.service imports no lab.chaos (chaos drives the service); it runs the chaos
tools as commands (`python -m lab.chaos.fault_proxy`, `python -m lab.chaos.netns create|delete NAME`), as
it runs `python -m lab gateway`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass

from lab.errors import LabError
from lab.service.spec import HOST, PROXY_SUFFIX, ReplicaProcess

NETNS_TOOL = (sys.executable, "-m", "lab.chaos.netns")
NETNS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ReplicaLink:
    network: str  # direct | proxy | netns
    host: str  # where the replica listens
    route_url: str  # what the gateway calls: the replica, or its proxy
    namespace: str | None = None  # netns only
    proxy_name: str | None = None  # proxy only: the proxy process's name
    proxy_listen_port: int | None = None
    command_prefix: tuple[str, ...] = ()  # netns: `ip netns exec <name>`; the pid is still the replica's own

    def replica_command(self, command: tuple[str, ...]) -> tuple[str, ...]:
        return (*self.command_prefix, *command)


def proxy_name(replica: str) -> str:
    return replica + PROXY_SUFFIX


def namespace_name(service: str, replica: str) -> str:
    # lab.chaos.netns accepts lab-<1..8 of [a-z0-9-]> (the veth names must fit 15 characters).
    return "lab-" + hashlib.sha1(f"{service}/{replica}".encode()).hexdigest()[:8]


def proxy_command(listen_port: int, target_host: str, target_port: int) -> tuple[str, ...]:
    """The fault proxy's command line; `{port}` (its control port) is filled in by the supervisor."""
    return (sys.executable, "-m", "lab.chaos.fault_proxy", "--listen-host", HOST, "--listen-port", str(listen_port),
            "--target-host", target_host, "--target-port", str(target_port), "--control-port", "{port}")


def _netns_tool(*args: str) -> dict:
    try:
        done = subprocess.run([*NETNS_TOOL, *args], capture_output=True, text=True, timeout=NETNS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LabError(f"`python -m lab.chaos.netns {' '.join(args)}` did not finish in {NETNS_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        raise LabError(f"network namespace: `python -m lab.chaos.netns {' '.join(args)}` failed: "
                       f"{(done.stderr or done.stdout).strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def create_namespace(name: str) -> str:
    """Create the namespace (after removing a stale one of that name); its address for the replica to listen on."""
    _netns_tool("delete", name)  # a supervisor killed with SIGKILL leaves it behind; the name is ours
    return str(_netns_tool("create", name)["namespace_ip"])


def delete_namespace(name: str) -> dict:
    return _netns_tool("delete", name)


def plan_link(service: str, replica: ReplicaProcess, port: int, proxy_listen_port: int | None) -> ReplicaLink:
    """The link of one replica; creates its namespace for "netns" (the caller deletes it at stop)."""
    if replica.network == "direct":
        return ReplicaLink("direct", HOST, f"http://{HOST}:{port}")
    if replica.network == "proxy":
        if proxy_listen_port is None:
            raise LabError(f"replica {replica.name!r}: a proxied replica needs a port for its proxy")
        return ReplicaLink("proxy", HOST, f"http://{HOST}:{proxy_listen_port}", proxy_name=proxy_name(replica.name),
                           proxy_listen_port=proxy_listen_port)
    name = namespace_name(service, replica.name)
    host = create_namespace(name)
    return ReplicaLink("netns", host, f"http://{host}:{port}", namespace=name,
                       command_prefix=("ip", "netns", "exec", name))
