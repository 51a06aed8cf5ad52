"""The network faults of `lab.chaos.network_faults` with the kernel's own tools, in a lab namespace.

Contract: `apply_netns_fault(namespace, fault)` / `clear_netns_faults(namespace, kind=None)` act on a
namespace made by `lab.chaos.netns` (veth `<ns>-h` on the host, `<ns>-n` inside). Everything is
installed inside the namespace (or on its host-side veth), so the host's own firewall is never touched
and deleting the namespace removes it all. Each kind owns two iptables chains inside the namespace,
`LAB-<KIND>-IN` (packets from the host) and `LAB-<KIND>-OUT` (packets to it), jumped to from INPUT and
OUTPUT; setting a kind flushes and refills its chains, clearing it flushes them.
- latency: `tc qdisc replace ... netem delay <ms> <jitter>ms` on `<ns>-h` (to_target) and `<ns>-n`
  (from_target). Needs the kernel's sch_netem.
- loss: iptables `statistic` DROP of `connection_fraction` of SYNs and `chunk_fraction` of packets in
  the chosen directions (real packet loss: TCP retransmits, so `chunk_stall_ms` is TCP's to decide).
- reset: REJECT `--reject-with tcp-reset` of that fraction of SYNs; `established`: `ss -K` destroys the
  namespace's established TCP sockets (the kernel sends RSTs); `after_bytes`: REJECT with a reset once a
  connection's reply direction passed that many bytes (conntrack accounting; IP bytes, headers included).
- partition: blackhole = DROP everything on the veth both ways; refuse = REJECT TCP with a reset (other
  packets with port-unreachable) and `ss -K` the established connections.
A tool or kernel feature that is missing raises `FaultUnavailable` ("unavailable: <reason>"), never a
fault that silently did nothing.
"""

from __future__ import annotations

from lab.chaos.netns import check_name, run_command
from lab.chaos.network_faults import FAULT_KINDS, Fault, Latency, Loss, Partition, Reset
from lab.errors import LabError


class FaultUnavailable(LabError):
    """The netns backend cannot make this fault here (the message starts with "unavailable: ")."""


def _in_ns(namespace: str, *argv: str, check: bool = True):
    return run_command("ip", "netns", "exec", namespace, *argv, check=check)


def _iptables(namespace: str, *args: str, check: bool = True):
    try:
        return _in_ns(namespace, "iptables", "-w", *args, check=check)
    except LabError as error:
        if "not installed" in str(error) or "No such file" in str(error) or "not found" in str(error):
            raise FaultUnavailable(f"unavailable: iptables in namespace {namespace}: {error}") from None
        raise


def _chains(kind: str) -> tuple[str, str]:
    return f"LAB-{kind.upper()}-IN", f"LAB-{kind.upper()}-OUT"


def _ensure_chains(namespace: str, kind: str) -> tuple[str, str]:
    chain_in, chain_out = _chains(kind)
    for chain, hook in ((chain_in, "INPUT"), (chain_out, "OUTPUT")):
        if _iptables(namespace, "-S", chain, check=False).returncode != 0:
            _iptables(namespace, "-N", chain)
        if _iptables(namespace, "-C", hook, "-j", chain, check=False).returncode != 0:
            _iptables(namespace, "-I", hook, "1", "-j", chain)
    return chain_in, chain_out


def _kill_established(namespace: str) -> None:
    # SOCK_DESTROY on every established TCP socket inside: the kernel RSTs the peer (the gateway).
    _in_ns(namespace, "ss", "-K", "-t", "state", "established")


def _netem(namespace: str, fault: Latency | None) -> None:
    devices = ((None, f"{namespace}-h", "to_target"), (namespace, f"{namespace}-n", "from_target"))
    for where, device, direction in devices:
        prefix = ("ip", "netns", "exec", where) if where else ()
        if fault is None or not fault.applies(direction):
            run_command(*prefix, "tc", "qdisc", "del", "dev", device, "root", check=False)  # none there: fine
            continue
        argv = [*prefix, "tc", "qdisc", "replace", "dev", device, "root", "netem", "delay",
                f"{fault.latency_ms}ms", *([f"{fault.jitter_ms}ms"] if fault.jitter_ms else [])]
        done = run_command(*argv, check=False)
        if done.returncode != 0:
            reason = done.stderr.strip()
            if "unknown" in reason.lower() or "No such file" in reason:
                raise FaultUnavailable(f"unavailable: tc netem ({reason}; the kernel lacks sch_netem)")
            raise LabError(f"`{' '.join(argv)}` failed: {reason}")


def _rules(namespace: str, fault: Fault) -> tuple[list[list[str]], list[list[str]]]:
    """(rules for the IN chain, rules for the OUT chain) of one fault, veth-bound."""
    veth = f"{namespace}-n"
    rules_in: list[list[str]] = []
    rules_out: list[list[str]] = []
    if isinstance(fault, Partition):
        if fault.mode == "blackhole":
            rules_in.append(["-i", veth, "-j", "DROP"])
            rules_out.append(["-o", veth, "-j", "DROP"])
        else:
            rules_in += [["-i", veth, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
                         ["-i", veth, "-j", "REJECT"]]
    elif isinstance(fault, Reset):
        if fault.new_connection_fraction:
            rules_in.append(["-i", veth, "-p", "tcp", "--syn", "-m", "statistic", "--mode", "random", "--probability",
                             f"{fault.new_connection_fraction}", "-j", "REJECT", "--reject-with", "tcp-reset"])
        if fault.after_bytes is not None:
            rules_in.append(["-i", veth, "-p", "tcp", "-m", "connbytes", "--connbytes", f"{fault.after_bytes}:",
                             "--connbytes-dir", "reply", "--connbytes-mode", "bytes",
                             "-j", "REJECT", "--reject-with", "tcp-reset"])
    elif isinstance(fault, Loss):
        if fault.connection_fraction:
            rules_in.append(["-i", veth, "-p", "tcp", "--syn", "-m", "statistic", "--mode", "random",
                             "--probability", f"{fault.connection_fraction}", "-j", "DROP"])
        if fault.chunk_fraction:
            drop = ["-m", "statistic", "--mode", "random", "--probability", f"{fault.chunk_fraction}", "-j", "DROP"]
            if fault.applies("to_target"):
                rules_in.append(["-i", veth, *drop])
            if fault.applies("from_target"):
                rules_out.append(["-o", veth, *drop])
    return rules_in, rules_out


def apply_netns_fault(namespace: str, fault: Fault) -> None:
    check_name(namespace)
    if isinstance(fault, Latency):
        _netem(namespace, fault)
        return
    if isinstance(fault, Reset) and fault.after_bytes is not None:
        _in_ns(namespace, "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1")  # connbytes counts bytes
    chain_in, chain_out = _ensure_chains(namespace, fault.kind)
    for chain in (chain_in, chain_out):
        _iptables(namespace, "-F", chain)
    rules_in, rules_out = _rules(namespace, fault)
    for chain, rules in ((chain_in, rules_in), (chain_out, rules_out)):
        for rule in rules:
            _iptables(namespace, "-A", chain, *rule)
    if (isinstance(fault, Reset) and fault.established) or (isinstance(fault, Partition) and fault.mode == "refuse"):
        _kill_established(namespace)


def clear_netns_faults(namespace: str, kind: str | None = None) -> list[str]:
    """Flush the chains of `kind` (all kinds when None) and remove netem; returns the kinds cleared."""
    check_name(namespace)
    if kind is not None and kind not in FAULT_KINDS:
        raise LabError(f"unknown fault kind {kind!r}; the kinds are {', '.join(FAULT_KINDS)}")
    kinds = [kind] if kind else list(FAULT_KINDS)
    for k in kinds:
        if k == "latency":
            _netem(namespace, None)
            continue
        for chain in _chains(k):
            _iptables(namespace, "-F", chain, check=False)  # a chain never made is already clear
    return kinds
