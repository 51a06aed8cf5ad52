"""A network namespace the lab creates for one replica, joined to the host by a veth pair.

Contract: `NetworkNamespace(name)` (name `lab-` + 1 to 8 of [a-z0-9-], so the lab only ever touches
namespaces it made) is a context manager: `create()` runs `ip netns add`, a veth pair `<name>-h`
(host side, `host_ip`) / `<name>-n` (inside, `namespace_ip`) on a free 10.231.X.0/30 subnet (X: the
first one no host interface uses, or `subnet_index`), and brings `lo` up inside. `run(argv)` starts a
command inside (`ip netns exec`, in its own session so process faults can signal its group); the
replica listens on `namespace_ip` (or 0.0.0.0) and the gateway reaches it at `namespace_ip:port`.
`destroy()` kills what `run` started, every other process left in the namespace, deletes the veth pair
and the namespace; it is idempotent and also runs when `create()` fails halfway, so nothing is left.
`create_namespace(name)` / `delete_namespace(name)` are the same as chaostoolkit actions (a rollback
deletes by name), and a command line: `python -m lab.chaos.netns create|delete NAME` prints the record as
one JSON line (what `lab up` runs for a `network: netns` replica; exit 2 with the error on stderr).
Needs root and iproute2; a failing `ip` command is a `LabError` with its stderr.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

from lab.chaos.records import FaultRecord
from lab.errors import LabError

__all__ = ["create_namespace", "delete_namespace"]

NAME_PATTERN = re.compile(r"^lab-[a-z0-9-]{1,8}$")  # <= 12 chars: "<name>-h" fits IFNAMSIZ (15)
SUBNET_PREFIX = "10.231"  # 10.231.X.0/30: host .1, namespace .2
COMMAND_TIMEOUT_S = 10.0


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise LabError(f"a lab network namespace is named lab-<1 to 8 of a-z 0-9 ->, got {name!r}")
    return name


def run_command(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip ARGS`, or ARGS as given when they start with a tool's name (tc, iptables, ss, sysctl, ip); a
    failure is a LabError with the tool's stderr."""
    argv = list(args) if args[0] in ("tc", "iptables", "ss", "sysctl", "ip") else ["ip", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (apt-get install iproute2 iptables)") from None
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _used_subnets() -> set[int]:
    text = run_command("-o", "-4", "addr", "show").stdout
    used = set()
    for match in re.finditer(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", text):
        used.add(int(match.group(1)))
    return used


def namespace_pids(name: str) -> list[int]:
    done = run_command("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


@dataclass
class NetworkNamespace:
    name: str
    subnet_index: int | None = None  # X of 10.231.X.0/30; None: the first free one
    host_ip: str = field(init=False, default="")
    namespace_ip: str = field(init=False, default="")
    _started: list[subprocess.Popen] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.subnet_index is not None and not 0 <= self.subnet_index <= 255:
            raise LabError(f"subnet_index must be 0..255, got {self.subnet_index}")

    @property
    def host_ifname(self) -> str:
        return f"{self.name}-h"

    @property
    def namespace_ifname(self) -> str:
        return f"{self.name}-n"

    def __enter__(self) -> NetworkNamespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> NetworkNamespace:
        if os.geteuid() != 0:
            raise LabError("creating a network namespace needs root; use the fault proxy backend instead")
        index = self.subnet_index
        if index is None:
            free = sorted(set(range(256)) - _used_subnets())
            if not free:
                raise LabError(f"no free {SUBNET_PREFIX}.X.0/30 subnet for a namespace")
            index = free[0]
        net = ipaddress.ip_network(f"{SUBNET_PREFIX}.{index}.0/30")
        self.host_ip, self.namespace_ip = str(net[1]), str(net[2])
        run_command("netns", "add", self.name)  # fails (and leaves nothing) when the name is taken
        try:
            run_command("link", "add", self.host_ifname, "type", "veth", "peer", "name", self.namespace_ifname,
                   "netns", self.name)
            run_command("addr", "add", f"{self.host_ip}/30", "dev", self.host_ifname)
            run_command("link", "set", self.host_ifname, "up")
            run_command("-n", self.name, "addr", "add", f"{self.namespace_ip}/30", "dev", self.namespace_ifname)
            run_command("-n", self.name, "link", "set", self.namespace_ifname, "up")
            run_command("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()  # never leave half a namespace behind
            raise
        return self

    def run(self, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` inside the namespace, in its own session; `destroy()` stops it."""
        popen = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], start_new_session=True, **popen_kwargs)
        self._started.append(popen)
        return popen

    def destroy(self) -> dict:
        for popen in self._started:
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        self._started.clear()
        return delete_namespace(self.name)


def create_namespace(name: str, subnet_index: int | None = None) -> dict:
    """chaostoolkit action: create the namespace and its veth pair; returns the addresses."""
    ns = NetworkNamespace(name, subnet_index).create()
    return FaultRecord("create_namespace", name, "netns",
                       {"host_ip": ns.host_ip, "namespace_ip": ns.namespace_ip, "host_ifname": ns.host_ifname,
                        "namespace_ifname": ns.namespace_ifname}).as_dict()


def delete_namespace(name: str) -> dict:
    """chaostoolkit action (a rollback): kill the processes left inside, delete the veth pair and the namespace."""
    check_name(name)
    killed = []
    for pid in namespace_pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    link = run_command("link", "del", f"{name}-h", check=False)  # deleting one end deletes the pair
    netns = run_command("netns", "del", name, check=False)
    return FaultRecord("delete_namespace", name, "netns",
                       {"killed_pids": killed, "veth_deleted": link.returncode == 0,
                        "namespace_deleted": netns.returncode == 0}).as_dict()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m lab.chaos.netns", description="create or delete a lab namespace")
    parser.add_argument("action", choices=("create", "delete"))
    parser.add_argument("name", help="lab-<1 to 8 of a-z 0-9 ->")
    args = parser.parse_args(argv)
    try:
        record = create_namespace(args.name) if args.action == "create" else delete_namespace(args.name)
    except LabError as error:
        print(f"lab.chaos.netns: {error}", file=sys.stderr)
        return 2
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
