"""Chaos drills: real faults against a running service, and the client-side truth of what they cost.

Every action and probe is a plain module-level function with JSON-able arguments and result, so a
notebook calls it directly and a chaostoolkit experiment names it:
    {"type": "action", "name": "hang replica a", "provider": {"type": "python",
     "module": "lab.chaos.processes", "func": "hang_process_group", "arguments": {"pid": 1234}}}
Targets are pids, ports and URLs passed in (`lab up`'s state file lists them). Modules, one concept each:
- `processes`: SIGKILL / SIGSTOP / SIGCONT / SIGTERM a replica's process group, or only its engine core.
- `network`: latency, loss, resets, partition between gateway and one replica, on the `fault_proxy`
  (a TCP proxy process with an HTTP control API; `proxy_client` starts and drives it) or in a network
  namespace (`netns`: namespace + veth; `netns_faults`: tc netem and iptables); `network_faults` types
  the faults; `backend.network_fault_backend()` says which backend works on this machine.
- `load_faults`: a tier overloaded 5x, a flash-sale burst, and the drill load itself, for a duration.
- `hostile_load`: floods to shrug off: wrong keys, poison requests from one key, 1,000 idle/slowloris sockets.
- `loadgen` (`DrillLoad`: background load, own thread and loop), `drill_client` (one request and how it
  ended: success, error, timeout, connection_error, cut or lost), `drill_report` (`DrillResult`: success rate
  per tier, VIP TTFT P99, time to detect and recover from the client's view).
- `probes`: the gateway's /metrics and /admin/replicas (healthy or ejected, success rate, TTFT P99).
- `steady_state`: the hypothesis (success rate >= X, VIP TTFT P99 <= Y, nothing lost) and its tolerance.
- `tcp_relay`: the proxy's ordered delayed writer and RST close. `control_http`: its tiny control API server.
- `records`: `FaultRecord`, what every action returns (what, to what, which backend, wall and monotonic time).
- `targets` and `service_faults`: a `lab up` service's targets from its state.json (pids, URLs, the link to
  a replica) and the faults above by name (`kill_replica(state_path, "tiny-0")`, `degrade_link(...)`);
  the experiments in chaos/ use these. `watch` (`ServiceWatch`): a background record of the gateway's
  replica states and events and of Prometheus' alerts through a drill, for its timeline.
- `reload_faults`: a corrupt checkpoint (NaN, a missing tensor, a truncated file) offered as a hot reload.
- `model_faults`: CUDA OOM, a hung step, a slow step, NaN weights inside a replica through its `/admin/faults`
  (`lab serve --enable-fault-injection`).
`discover()` is chaostoolkit's extension hook (`chaos init`/discovery read it). lab.chaos sits above the
product packages (it may import lab.bench); no product imports it.
"""

from __future__ import annotations

ACTION_MODULES = ("lab.chaos.processes", "lab.chaos.network", "lab.chaos.load_faults", "lab.chaos.netns",
                  "lab.chaos.service_faults", "lab.chaos.model_faults", "lab.chaos.hostile_load",
                  "lab.chaos.reload_faults")
PROBE_MODULES = ("lab.chaos.probes", "lab.chaos.steady_state", "lab.chaos.backend", "lab.chaos.targets")


def discover(discover_system: bool = True) -> dict:
    """chaostoolkit's discovery of this extension: every action and probe with its arguments."""
    from importlib.metadata import PackageNotFoundError, version

    from chaoslib.discovery import discover_actions, discover_probes, initialize_discovery_result

    try:
        lab_version = version("deepseek-serving-lab")
    except PackageNotFoundError:
        lab_version = "unknown"
    discovery = initialize_discovery_result("lab.chaos", lab_version, "lab")
    for module in ACTION_MODULES:
        discovery["activities"].extend(discover_actions(module))
    for module in PROBE_MODULES:
        discovery["activities"].extend(discover_probes(module))
    return discovery
