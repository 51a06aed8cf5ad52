"""A short live run against the real `lab serve --model tiny` (a subprocess on 127.0.0.1, CPU).

Skipped, saying why, when this checkout has no `lab/server/cli.py` (issue: the replica server).
Checks what only a real server can show: one row per request, `ignore_eos` forcing exactly
`max_tokens` output tokens (from the server's usage chunk), TTFT <= E2E, and the record logged
to a temporary MLflow store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from lab.bench.arrivals import PoissonArrivals
from lab.bench.record import save_results
from lab.bench.runner import BenchConfig, run_benchmark
from lab.bench.workloads import RandomWorkload
from lab.paths import project_root

SERVER_CLI = project_root() / "lab" / "server" / "cli.py"
STARTUP_TIMEOUT_S = 90.0

pytestmark = pytest.mark.skipif(
    not SERVER_CLI.exists(), reason=f"{SERVER_CLI} does not exist yet: no `lab serve` to run a live benchmark against"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def lab_process(tmp_path_factory):
    """`lab serve` started, not yet waited for: it boots while the MLflow store is migrated."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "lab", "serve", "--model", "tiny", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=project_root())
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        # Its SIGTERM drain is the server's own business (and seconds of test time): just stop it.
        process.kill()
        process.wait()


@pytest.fixture
def lab_server(lab_process) -> str:
    process, base_url, log_path = lab_process
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"lab serve exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=1.0).status_code == 200:
                return base_url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"lab serve not ready after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def test_live_run_against_lab_serve(lab_process, tracking_uri, client, prompt_builder, lab_server, tmp_path):
    config = BenchConfig(base_url=lab_server, workload=RandomWorkload(num_requests=4, input_tokens=12, output_tokens=6),
                         arrivals=PoissonArrivals(20.0), show_progress=False, request_timeout_s=60.0)
    result = run_benchmark(config, prompts=prompt_builder)
    assert result.model == "tiny"
    assert len(result.results) == 4 and result.metrics.completed == 4, result.metrics.errors_by_kind
    for row in result.results:
        assert row.output_tokens == row.max_tokens == 6 and row.output_tokens_from_usage
        assert 0 < row.ttft_s <= row.e2e_s
        assert row.prompt_tokens_reported == 12  # the exact-length text prompt, as the server counted it
    outputs = save_results([result], tmp_path / "live", tracking_uri=tracking_uri)
    run = client.get_run(outputs.run_id)
    assert run.data.metrics["completed"] == 4.0 and run.data.metrics["total_output_tokens"] == 24.0
    assert run.info.status == "FINISHED"
    assert "requests.csv" in {a.path for a in client.list_artifacts(outputs.run_id)}
