"""A whole local service from one YAML: replicas, the gateway in front, a real Prometheus; supervised.

`lab up --config FILE` / `lab down` (lab.service.cli) and the Python API:

    from lab.service import Service, load_spec
    with Service(load_spec("deploy/service.example.yaml")) as service:
        service.gateway_url, service.prometheus_url, service.replica("tiny-0").pid
        service.restart("tiny-0"); service.prometheus.wait_for_alert("ModelUnhealthy", "firing", 60)

Layering: a composition layer above the product packages. It may import them (gateway config checks);
no product package imports it; studies and lab.chaos may. Files: spec (records), fields and load (YAML ->
spec), process (one process: session, log, probe, stop), slot (the restart policy's state machine),
network (a replica reached directly, through a fault proxy process, or inside a lab network namespace),
prometheus (binary, config, HTTP API), state (state.json), supervisor (`Service`), cli (`lab up`,
`lab down`), daemon (`lab up --detach`, `lab down`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, not here: `lab --help` imports lab.service.cli, and with it this package.
_EXPORTS = {"load_spec": "load", "parse_spec": "load", "PrometheusClient": "prometheus", "GatewaySpec": "spec",
            "PrometheusSpec": "spec", "ReplicaProcess": "spec", "RestartPolicy": "spec", "ServiceSpec": "spec",
            "ProcessRecord": "state", "ServiceState": "state", "downtimes": "state", "read_state": "state",
            "Service": "supervisor"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lab.service' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lab.service.{_EXPORTS[name]}"), name)
