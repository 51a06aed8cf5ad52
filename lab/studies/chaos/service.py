"""The service a drill study starts: the same schema as chaos/service.yaml, built from a `DrillStudyConfig`.

Contract: `choose_network(config)` says how the gateway reaches the replicas: `config.network`, or with
"auto" the backend `lab.chaos.backend.network_fault_backend()` says works here ("netns" with root, iproute2,
iptables and tc netem; else "proxy"), with its reason: the record names the backend every link drill used.
`drill_keys()` makes fresh API keys for the run (vip, batch, admin; only their hashes reach the gateway).
`drill_service_spec(config, log_dir, network, keys)` is the `ServiceSpec` (parsed by `lab.service.load`,
so it is checked like a `lab up` file and `service_mapping` can be written next to the record): the
replicas (`lab serve` on the config's model and device with fault injection behind the run's admin key,
or `replica_command`) each reached over `network`,
the gateway with the config's probe interval, timeout and threshold, Prometheus scraping every
`scrape_interval_s` with deploy/prometheus/rules-drill.yml, and restarts on failure with a short backoff.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from lab.chaos.backend import network_fault_backend
from lab.gateway.auth import hash_key
from lab.paths import project_root
from lab.service.load import parse_spec
from lab.service.spec import ServiceSpec
from lab.studies.chaos.config import DrillStudyConfig

DRILL_RULES = project_root() / "deploy" / "prometheus" / "rules-drill.yml"


def choose_network(config: DrillStudyConfig) -> dict:
    if config.network != "auto":
        return {"backend": config.network, "reason": "asked for in the study's config"}
    found = network_fault_backend()
    return {"backend": found["backend"], "reason": found["reason"]}


def drill_keys() -> dict[str, str]:
    return {name: f"sk-drill-{name}-{secrets.token_hex(8)}" for name in ("vip", "batch", "admin")}


def service_mapping(config: DrillStudyConfig, log_dir: Path, network: str, keys: dict[str, str]) -> dict:
    replica: dict = {"name": "replica", "count": config.replicas, "network": network}
    if config.replica_command is not None:
        replica["command"] = list(config.replica_command)
    else:
        # Fault injection for the GPU and model drills (chaos/model-*.yaml): /admin/faults behind the run's own
        # admin key; a short iteration timeout so a hung step shows on /health within a drill.
        faults = ["--enable-fault-injection", "--admin-key-hash", hash_key(keys["admin"]),
                  "--engine-iteration-timeout-s", str(config.engine_iteration_timeout_s)]
        flags = [*(["--hf-overrides", json.dumps(dict(config.hf_overrides))] if config.hf_overrides else []),
                 "--log-level", "warning", *faults, *config.serve_flags]
        replica.update(model=config.model, device=config.device, flags=flags)
    gateway = {"keys": [{"name": f"drill-{tier}", "tier": tier, "hash": hash_key(keys[tier])}
                        for tier in ("vip", "batch")],
               "admin_key_hash": hash_key(keys["admin"]),
               "health": {"interval_s": config.probe_interval_s, "probe_timeout_s": config.probe_timeout_s,
                          "failure_threshold": config.failure_threshold},
               "proxy": {"connect_timeout_s": 1, "read_timeout_s": 60}}
    return {"name": "chaos-drills", "log_dir": str(log_dir), "ready_timeout_s": config.ready_timeout_s,
            "stop_timeout_s": 20, "replicas": [replica], "gateway": {"config": gateway, "log_level": "warning"},
            "prometheus": {"scrape_interval_s": config.scrape_interval_s,
                           "evaluation_interval_s": config.scrape_interval_s, "rules": str(DRILL_RULES)},
            "restart": {"policy": "on-failure", "max_restarts": 5, "backoff_s": 0.5, "max_backoff_s": 10}}


def drill_service_spec(config: DrillStudyConfig, log_dir: Path, network: str, keys: dict[str, str]) -> ServiceSpec:
    return parse_spec(service_mapping(config, log_dir, network, keys), project_root())
