"""A `lab.service` service for the experiment files of chaos/: what `lab up --config chaos/service.yaml` runs,
with engine-free replicas so a test takes seconds.

`drill_service(workdir)` starts, through `lab.service.Service` (the code `lab up` runs), two replicas of
`lab.studies.gateway_latency.upstream` (real HTTP servers answering OpenAI completions, streamed or not),
each behind a real fault proxy (`network: proxy`), the real gateway (a VIP and a batch key, an admin key,
probes every `HEALTH_INTERVAL_S`, a short upstream read timeout) and no Prometheus (the experiments need
none; tests/studies/test_chaos_drills.py runs one). `drill_env(service, workdir)` is the environment a
user gives `chaos run`: the state file, the keys and short drill tunables.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.gateway.auth import hash_key
from lab.service.spec import GatewaySpec, PrometheusSpec, ReplicaProcess, RestartPolicy, ServiceSpec
from lab.service.supervisor import Service

KEYS = {"vip": "sk-chaos-vip", "batch": "sk-chaos-batch"}
ADMIN_KEY = "sk-chaos-admin"
HEALTH_INTERVAL_S = 0.5
UPSTREAM = (sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--host", "{host}", "--port", "{port}")


def drill_spec(workdir: Path) -> ServiceSpec:
    gateway = {"keys": [{"name": tier, "tier": tier, "hash": hash_key(key)} for tier, key in KEYS.items()],
               "admin_key_hash": hash_key(ADMIN_KEY),
               "health": {"interval_s": HEALTH_INTERVAL_S, "failure_threshold": 3, "probe_timeout_s": 0.3},
               "proxy": {"connect_timeout_s": 1.0, "read_timeout_s": 2.0}}
    replicas = tuple(ReplicaProcess(f"replica-{i}", UPSTREAM, network="proxy", metrics_path=None) for i in range(2))
    return ServiceSpec("chaos-test", replicas, workdir / "service", GatewaySpec(gateway), PrometheusSpec(enabled=False),
                       RestartPolicy(backoff_s=0.2, max_backoff_s=1.0), ready_timeout_s=60, stop_timeout_s=10)


@contextmanager
def drill_service(workdir: Path) -> Iterator[Service]:
    with Service(drill_spec(workdir)) as service:
        yield service


def drill_env(service: Service, workdir: Path) -> dict[str, str]:
    return {"LAB_CHAOS_STATE": str(service.state_path), "LAB_CHAOS_REPLICA": "replica-0",
            "LAB_CHAOS_VIP_KEY": KEYS["vip"], "LAB_CHAOS_BATCH_KEY": KEYS["batch"], "LAB_CHAOS_ADMIN_KEY": ADMIN_KEY,
            "LAB_CHAOS_SUMMARY_DIR": str(workdir / "ledgers"), "LAB_CHAOS_VIP_RATE_PER_S": "3",
            "LAB_CHAOS_BATCH_RATE_PER_S": "3", "LAB_CHAOS_LOAD_DURATION_S": "8", "LAB_CHAOS_FAULT_AFTER_S": "1",
            "LAB_CHAOS_FAULT_DURATION_S": "2", "LAB_CHAOS_EJECT_TIMEOUT_S": "15", "LAB_CHAOS_RECOVER_TIMEOUT_S": "30",
            # a loaded 2-core CI machine: the drill checks the road, not the GPU target of 500 ms
            "LAB_CHAOS_MAX_VIP_TTFT_P99_MS": "3000"}
