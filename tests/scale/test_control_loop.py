"""The live control loop with a fake pool, Prometheus parsing, and the gateway admin sync."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from lab.scale.control_loop import LoopConfig, run_control_loop
from lab.scale.gateway_sync import GatewaySync
from lab.scale.pool import ReplicaInfo, ReplicaState
from lab.scale.reactive import ReactiveConfig, ReactiveThreshold
from lab.scale.replica_metrics import parse_prometheus
from lab.scale.signals import LoadSignals

PROMETHEUS = """# HELP vllm:num_requests_running Running requests.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="tiny"} 3.0
vllm:num_requests_waiting{model_name="tiny"} 2.0
vllm:request_success_total{finished_reason="stop",model_name="tiny"} 10.0
vllm:request_success_total{finished_reason="length",model_name="tiny"} 5.0
"""


def test_parse_prometheus_sums_series() -> None:
    metrics = parse_prometheus(PROMETHEUS)
    assert metrics["vllm:num_requests_running"] == 3.0
    assert metrics["vllm:request_success_total"] == 15.0


class FakePool:
    def __init__(self) -> None:
        self.count, self.calls = 0, []

    def scale_to(self, n: int) -> None:
        self.count = n
        self.calls.append(n)

    def refresh(self) -> list[ReplicaInfo]:
        return self.replicas()

    def replicas(self) -> list[ReplicaInfo]:
        return [ReplicaInfo(f"r{i}", f"http://127.0.0.1:{9000 + i}", ReplicaState.READY, 0.0, 1.0)
                for i in range(self.count)]

    def ready_endpoints(self) -> list[str]:
        return [r.url for r in self.replicas()]

    def close(self) -> None:
        pass


class StepReader:
    """Utilization 1.0 from t=3 s on (10 slots per replica, 10 running + 4 waiting per replica)."""

    def read(self, pool: FakePool, time_s: float) -> LoadSignals:
        busy = time_s >= 3
        n = pool.count
        return LoadSignals(time_s, 0.0, 4 * n if busy else 0, 10 * n if busy else 2 * n, 0.5, n, 0, 10)


def test_loop_scales_the_pool_after_the_policy_delay() -> None:
    ticks = iter(range(100))
    now = {"t": 0.0}

    def clock() -> float:
        return now["t"]

    def sleep(_: float) -> None:
        now["t"] = float(next(ticks)) + 1

    pool = FakePool()
    policy = ReactiveThreshold(ReactiveConfig(decision_delay_s=2, target_utilization=0.7))
    changes = run_control_loop(pool, policy, StepReader(), LoopConfig(interval_s=1, duration_s=8, initial_replicas=1),
                               clock=clock, sleep=sleep)
    # Busy from t=3, held 2 s -> at t=5: need ceil(14 / 7) = 2 replicas.
    assert [(c.time_s, c.desired_replicas) for c in changes][0] == (5.0, 2)
    assert pool.count >= 2


def test_gateway_sync_posts_new_and_deletes_gone_replicas() -> None:
    calls = []

    class Admin(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            calls.append((self.command, self.path, body, self.headers["Authorization"]))
            self.send_response(200)
            self.end_headers()

        do_POST = do_DELETE = _record

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sync = GatewaySync(f"http://127.0.0.1:{server.server_port}", "k3y")
        sync.sync(["http://127.0.0.1:8001", "http://127.0.0.1:8002"])
        sync.sync(["http://127.0.0.1:8002"])
        sync.sync(["http://127.0.0.1:8002"])  # no change, no call
    finally:
        server.shutdown()
    assert calls == [
        ("POST", "/admin/replicas", {"url": "http://127.0.0.1:8001", "name": "scale-127.0.0.1-8001"}, "Bearer k3y"),
        ("POST", "/admin/replicas", {"url": "http://127.0.0.1:8002", "name": "scale-127.0.0.1-8002"}, "Bearer k3y"),
        ("DELETE", "/admin/replicas/scale-127.0.0.1-8001", None, "Bearer k3y"),
    ]
