"""The gateway latency bench: its statistics on hand-made samples, its load generator on a real upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

from lab.errors import LabError
from lab.studies.gateway_latency.bench import LatencyBenchConfig, LatencyBenchResult, LatencyStats, latency_stats, server_stack
from lab.studies.gateway_latency.load import completion_request, fire
from tests.gateway.fakes import free_port


def test_latency_stats_of_hand_made_samples() -> None:
    stats = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.count == 100 and stats.max_ms == pytest.approx(100.0)
    assert stats.mean_ms == pytest.approx(50.5) and stats.p50_ms == pytest.approx(50.5)
    assert stats.p99_ms == pytest.approx(99.01)  # rank 0.99 * 99 = 98.01 -> 99 + 0.01 * (100 - 99)
    assert latency_stats([0.002]).p99_ms == pytest.approx(2.0)
    with pytest.raises(LabError, match="no latency samples"):
        latency_stats([])


def test_added_latency_is_the_difference_of_the_percentiles() -> None:
    direct, gateway = LatencyStats(10, 1.0, 0.5, 2.0, 3.0), LatencyStats(10, 2.0, 1.25, 6.0, 9.0)
    result = LatencyBenchResult(LatencyBenchConfig(), direct, gateway, 0, 0, 0.0, {"client": 0.1}, {"loop": "uvloop"})
    assert result.added_p50_ms == pytest.approx(0.75) and result.added_p99_ms == pytest.approx(4.0)
    metrics = result.metrics()
    assert metrics["direct_p99_ms"] == 2.0 and metrics["gateway_p50_ms"] == 1.25 and metrics["added_p99_ms"] == 4.0
    assert metrics["cpu_ms_per_request_client"] == 0.1


def test_the_gateway_runs_on_uvloop_and_httptools() -> None:
    assert server_stack() == {"server": "lab.gateway.http_server", "loop": "uvloop", "http": "httptools"}
    assert server_stack("uvicorn") == {"server": "uvicorn", "loop": "uvloop", "http": "HttpToolsProtocol"}


def test_load_generator_keeps_its_rate_against_the_minimal_upstream() -> None:
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--port", str(port)],
                                stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={}, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "upstream did not start"
                time.sleep(0.1)
        assert reply.json()["choices"][0]["text"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"] == "echo"
        request = completion_request("127.0.0.1", port, "sk-x", b'{"prompt": "ping"}')
        samples = asyncio.run(fire("127.0.0.1", port, request, rate_per_s=100.0, duration_s=0.5))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    assert len(samples.latencies_s) == 50 and set(samples.statuses) == {200} and samples.failures == 0
    assert 0.45 <= samples.wall_s < 2.0  # 50 requests at 100/s: the schedule, not the server, sets the pace
    assert all(0 < x < 1.0 for x in samples.latencies_s)


def test_bench_latency_command_writes_a_record_naming_its_device_rates_and_stack(tmp_path, capsys) -> None:
    from lab.cli import main
    from lab.track.record import ResultRecord

    out = tmp_path / "gateway_latency"
    assert main(["gateway", "bench-latency", "--rate", "40", "--rate", "80", "--target-rate", "80",
                 "--duration-s", "0.5", "--warmup-s", "0.2", "--rounds", "1", "--out", str(out)]) == 0
    record = ResultRecord.load(out / "record.json")
    assert record.experiment == "gateway_latency" and record.device
    assert record.params["rate_per_s"] == 80 and record.params["rates_per_s"] == [40, 80]
    assert record.params["gateway_loop"] == "uvloop" and "minimal" in record.params["upstream"]
    assert record.params["gateway_server"] == "lab.gateway.http_server"
    assert record.metrics["direct_count"] == record.metrics["gateway_count"] == 40  # 80/s for 0.5 s, each path
    m = record.metrics
    assert m["added_p50_ms"] == pytest.approx(m["gateway_p50_ms"] - m["direct_p50_ms"])
    assert record.metrics["non_200"] == 0 and record.metrics["cpu_ms_per_request_gateway_gateway"] > 0
    assert [c.params["rate_per_s"] for c in record.children] == [40, 80]
    assert '"rate_per_s": 80.0' in capsys.readouterr().out.strip().splitlines()[-1]
