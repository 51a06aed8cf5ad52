"""LocalPool with real processes: a stub replica (fast) and real `lab serve --model tiny` replicas."""

from __future__ import annotations

import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest

from lab.errors import LabError
from lab.scale.local_pool import LocalPool, LocalPoolConfig
from lab.scale.pool import ReplicaState

# A replica stand-in: /ready is 503 for `delay` seconds, then 200; exits on SIGTERM.
STUB = textwrap.dedent("""
    import http.server, sys, time
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    started = time.monotonic()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/ready" and time.monotonic() - started >= delay
            self.send_response(200 if ok else 503); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def stub_command(tmp_path: Path) -> tuple[str, ...]:
    script = tmp_path / "stub_replica.py"
    script.write_text(STUB)
    return (sys.executable, str(script), "{port}", "0.3")


def test_pool_starts_waits_for_ready_and_stops(tmp_path: Path, stub_command) -> None:
    with LocalPool(LocalPoolConfig(command=stub_command, log_dir=tmp_path, stop_timeout_s=5)) as pool:
        pool.scale_to(2)
        assert {r.state for r in pool.replicas()} == {ReplicaState.STARTING}
        urls = pool.wait_ready(2, timeout_s=20)
        assert len(set(urls)) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
        assert all(r.ready_after_s >= 0.3 for r in pool.replicas())  # the stub's cold start
        with urllib.request.urlopen(urls[0] + "/ready", timeout=2) as response:
            assert response.status == 200
        pool.scale_to(1)
        assert len(pool.ready_endpoints()) == 1
        stopping = [r for r in pool.replicas() if r.state is ReplicaState.STOPPING]
        assert len(stopping) == 1
    assert len(pool.started_pids) == 2
    assert not any(psutil.pid_exists(pid) for pid in pool.started_pids)  # close() stopped every process


def test_a_replica_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    command = (sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)", "{port}")
    with LocalPool(LocalPoolConfig(command=command, log_dir=tmp_path)) as pool:
        pool.scale_to(1)
        with pytest.raises(LabError, match="no model here"):
            pool.wait_ready(1, timeout_s=20)


def test_real_tiny_replicas_start_and_stop(tmp_path: Path) -> None:
    pytest.importorskip("lab.server.cli")
    config = LocalPoolConfig(command=(sys.executable, "-m", "lab", "serve", "--model", "tiny", "--device", "cpu",
                                      "--port", "{port}"), log_dir=tmp_path, stop_timeout_s=20)
    with LocalPool(config) as pool:
        pool.scale_to(2)
        urls = pool.wait_ready(2, timeout_s=90)
        for url in urls:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                assert response.status == 200
        pool.scale_to(0)
        assert pool.ready_endpoints() == []
    assert not any(psutil.pid_exists(pid) for pid in pool.started_pids)
