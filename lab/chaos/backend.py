"""Which network-fault backend works on this machine: the kernel's (netns) or the fault proxy.

Contract: `network_fault_backend()` (also a chaostoolkit probe) tries, in a throwaway namespace
`lab-probe<N>` that it always deletes, everything the netns backend needs: root, the `ip`, `tc`,
`iptables` and `ss` tools, creating a namespace, a veth pair, an iptables rule, a `tc netem` qdisc. It
returns `{"backend": "netns" | "proxy", "reason": ..., "checks": {name: "ok" | "<why not>"}}`: "netns"
only when every check passed, else "proxy" with the first failure as the reason. Nothing is cached: a
machine can gain a tool between two calls, and the probe takes a fraction of a second.
"""

from __future__ import annotations

import os
import shutil

from lab.chaos.netns import run_command
from lab.errors import LabError

__all__ = ["network_fault_backend"]

TOOLS = ("ip", "tc", "iptables", "ss")


def _try(checks: dict[str, str], name: str, *argv: str) -> bool:
    try:
        run_command(*argv)
    except LabError as error:
        checks[name] = str(error)
        return False
    checks[name] = "ok"
    return True


def network_fault_backend() -> dict:
    checks: dict[str, str] = {}
    checks["root"] = "ok" if os.geteuid() == 0 else f"running as uid {os.geteuid()}, not root"
    for tool in TOOLS:
        checks[tool] = "ok" if shutil.which(tool) else f"{tool} not found on PATH"
    if all(checks[k] == "ok" for k in ("root", "ip")):
        name = f"lab-probe{os.getpid() % 10000}"
        if _try(checks, "netns", "netns", "add", name):
            try:
                inside = ("ip", "netns", "exec", name)
                _try(checks, "veth", "-n", name, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b")
                if checks["iptables"] == "ok":
                    _try(checks, "iptables_rule", *inside, "iptables", "-w", "-A", "INPUT", "-p", "tcp",
                         "--dport", "9", "-j", "REJECT", "--reject-with", "tcp-reset")
                if checks["tc"] == "ok":
                    _try(checks, "netem", *inside, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
            finally:
                run_command("netns", "del", name, check=False)
    failures = [f"{name}: {why}" for name, why in checks.items() if why != "ok"]
    if failures:
        return {"backend": "proxy", "reason": f"the netns backend is unavailable ({failures[0]})", "checks": checks}
    return {"backend": "netns", "reason": "root, iproute2, iptables and tc netem all work here", "checks": checks}
