"""Network faults between the gateway and one replica, as chaostoolkit actions, on either backend.

Contract: every function takes exactly one of `proxy_url` (the control URL of a
`lab.chaos.fault_proxy` placed between gateway and replica) or `namespace` (a `lab.chaos.netns`
namespace the replica runs in) and returns a `FaultRecord.as_dict()` whose `backend` says which one
acted ("proxy" or "netns") and whose `fault` holds the settings (`lab.chaos.network_faults`):
    add_latency(latency_ms, jitter_ms=0, direction="both")
    add_loss(connection_fraction=0, chunk_fraction=0, chunk_stall_ms=200, direction="both")
    reset_connections(new_connection_fraction=0, established=False, after_bytes=None)
    partition(mode="blackhole" | "refuse")
    clear_network_faults(kind=None)      # a rollback: one kind, or every kind
The netns backend raises `FaultUnavailable` ("unavailable: <reason>") for what this machine cannot do
(`lab.chaos.backend.network_fault_backend()` says which backend works here before a drill starts).
"""

from __future__ import annotations

from typing import Any

from lab.chaos.netns_faults import apply_netns_fault, clear_netns_faults
from lab.chaos.network_faults import FAULT_KINDS, describe, parse_fault
from lab.chaos.proxy_client import clear_proxy_faults, set_proxy_fault
from lab.chaos.records import FaultRecord, Instant
from lab.errors import LabError

__all__ = ["add_latency", "add_loss", "reset_connections", "partition", "clear_network_faults"]


def _backend(proxy_url: str | None, namespace: str | None) -> tuple[str, str]:
    if (proxy_url is None) == (namespace is None):
        raise LabError("give exactly one of proxy_url (a fault proxy's control URL) or namespace (a lab netns)")
    return ("proxy", proxy_url) if proxy_url is not None else ("netns", namespace)


def _apply(kind: str, fields: dict[str, Any], proxy_url: str | None, namespace: str | None) -> dict:
    backend, where = _backend(proxy_url, namespace)
    fault = parse_fault(kind, fields)  # checked here too: a bad argument fails before anything changes
    at = Instant.now()  # stamped before the fault takes effect: the service's reaction always comes after it
    if backend == "proxy":
        set_proxy_fault(where, kind, fields)
    else:
        apply_netns_fault(where, fault)
    return FaultRecord(kind, where, backend, {"fault": describe(fault)}, at).as_dict()


def add_latency(latency_ms: float, jitter_ms: float = 0.0, direction: str = "both", *,
                proxy_url: str | None = None, namespace: str | None = None) -> dict:
    return _apply("latency", {"latency_ms": latency_ms, "jitter_ms": jitter_ms, "direction": direction},
                  proxy_url, namespace)


def add_loss(connection_fraction: float = 0.0, chunk_fraction: float = 0.0, chunk_stall_ms: float = 200.0,
             direction: str = "both", *, proxy_url: str | None = None, namespace: str | None = None) -> dict:
    return _apply("loss", {"connection_fraction": connection_fraction, "chunk_fraction": chunk_fraction,
                           "chunk_stall_ms": chunk_stall_ms, "direction": direction}, proxy_url, namespace)


def reset_connections(new_connection_fraction: float = 0.0, established: bool = False, after_bytes: int | None = None,
                      *, proxy_url: str | None = None, namespace: str | None = None) -> dict:
    return _apply("reset", {"new_connection_fraction": new_connection_fraction, "established": established,
                            "after_bytes": after_bytes}, proxy_url, namespace)


def partition(mode: str = "blackhole", *, proxy_url: str | None = None, namespace: str | None = None) -> dict:
    return _apply("partition", {"mode": mode}, proxy_url, namespace)


def clear_network_faults(kind: str | None = None, *, proxy_url: str | None = None,
                         namespace: str | None = None) -> dict:
    backend, where = _backend(proxy_url, namespace)
    if kind is not None and kind not in FAULT_KINDS:
        raise LabError(f"unknown fault kind {kind!r}; the kinds are {', '.join(FAULT_KINDS)}")
    at = Instant.now()
    if backend == "proxy":
        clear_proxy_faults(where, kind)
    else:
        clear_netns_faults(where, kind)
    return FaultRecord("clear_network_faults", where, backend, {"kind": kind or "all"}, at).as_dict()
