"""run_benchmark against a scripted OpenAI-compatible server on 127.0.0.1 (client, runner, outputs)."""

from __future__ import annotations

import _thread
import csv
import json
import math
import threading

import pytest

from lab.bench.arrivals import ConstantArrivals, PoissonArrivals
from lab.bench.metrics import Slo
from lab.bench.record import save_results
from lab.bench.runner import BenchConfig, run_benchmark
from lab.bench.plots import plot_latency_vs_concurrency
from lab.bench.sweep import sweep_concurrency, sweep_rates
from lab.bench.tiers import TierMix, TierShare
from lab.bench.workloads import RandomWorkload, TraceWorkload
from lab.errors import LabError
from lab.gpu.nvml import gpu_count
from tests.bench.fake_openai import FakeBehaviour


def config(server, **overrides) -> BenchConfig:
    values = dict(base_url=server.base_url, workload=RandomWorkload(12, 8, 5), arrivals=PoissonArrivals(200.0),
                  show_progress=False, telemetry_interval_s=0.05)
    values.update(overrides)
    return BenchConfig(**values)


def test_streamed_timings_tokens_and_tier_keys(fake_server, prompt_builder):
    tiers = TierMix((TierShare("vip", "k-vip", 1.0), TierShare("batch", "k-batch", 1.0)))
    result = run_benchmark(config(fake_server, tiers=tiers, slos=(Slo("ttft", 10_000.0),)), prompts=prompt_builder)
    assert result.model == "fake-model" and not result.partial
    assert len(result.results) == 12 and result.metrics.completed == 12
    for r in result.results:
        assert r.output_tokens == r.max_tokens == 5 and r.output_tokens_from_usage
        assert 0.02 <= r.ttft_s <= r.e2e_s  # the server waits 20 ms before the first token
        assert len(r.itl_s) == 4 and r.prompt_tokens_reported == 8
    body = fake_server.log.bodies[-1]
    assert body["stream"] and body["ignore_eos"] and body["max_tokens"] == 5
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "fake-model"
    sent = fake_server.log.authorizations[1:]  # [0] is the warm-up
    assert sorted(sent) == sorted(f"Bearer k-{r.tier}" for r in result.results)
    assert set(result.tier_metrics) == {"vip", "batch"}
    assert result.metrics.good_requests == 12
    assert "tier.vip.ttft_p99_ms" in result.flat_metrics()


@pytest.mark.parametrize("fake_server", [FakeBehaviour(send_usage=False)], indirect=True)
def test_output_tokens_from_chunks_without_usage(fake_server, prompt_builder):
    result = run_benchmark(config(fake_server, prompt_format="token-ids"), prompts=prompt_builder)
    assert all(r.output_tokens == 5 and not r.output_tokens_from_usage for r in result.results)
    assert isinstance(fake_server.log.bodies[-1]["prompt"], list)


@pytest.mark.parametrize("fake_server", [FakeBehaviour(rejected_keys=("k-bad",))], indirect=True)
def test_http_errors_are_rows_with_status_per_tier(fake_server, prompt_builder):
    tiers = TierMix((TierShare("good", "k-good", 1.0), TierShare("bad", "k-bad", 1.0)))
    result = run_benchmark(config(fake_server, tiers=tiers, num_warmups=0), prompts=prompt_builder)
    bad = [r for r in result.results if r.tier == "bad"]
    assert bad and all(r.error_kind == "http_401" and r.http_status == 401 for r in bad)
    assert result.tier_metrics["bad"].failed == len(bad) and result.tier_metrics["good"].failed == 0
    assert result.metrics.errors_by_kind == {"http_401": len(bad)}


@pytest.mark.parametrize("fake_server", [FakeBehaviour(first_token_delay_s=2.0)], indirect=True)
def test_timeouts_are_counted(fake_server, prompt_builder):
    result = run_benchmark(config(fake_server, workload=RandomWorkload(2, 4, 2), num_warmups=0,
                                  request_timeout_s=0.2), prompts=prompt_builder)
    assert result.metrics.timeouts == 2 and result.metrics.completed == 0


def test_max_concurrency_caps_requests_in_flight(fake_server, prompt_builder):
    result = run_benchmark(config(fake_server, arrivals=PoissonArrivals(float("inf")), max_concurrency=2),
                           prompts=prompt_builder)
    assert fake_server.log.max_in_flight == 2
    assert result.metrics.completed == 12
    assert max(r.sent_s - r.scheduled_s for r in result.results) > 0.05  # later ones waited


def test_unreachable_server_fails_fast_with_the_url(prompt_builder):
    cfg = BenchConfig(base_url="http://127.0.0.1:9", model="m", workload=RandomWorkload(1, 2, 1), show_progress=False)
    with pytest.raises(LabError, match="127.0.0.1:9"):
        run_benchmark(cfg, prompts=prompt_builder)


@pytest.mark.parametrize("fake_server", [FakeBehaviour(token_gap_s=0.05)], indirect=True)
def test_ctrl_c_stops_cleanly_and_keeps_what_was_measured(fake_server, prompt_builder, tmp_path):
    cfg = config(fake_server, workload=RandomWorkload(40, 4, 4), arrivals=ConstantArrivals(10.0))
    timer = threading.Timer(1.0, _thread.interrupt_main)  # what Ctrl-C does to the main thread
    timer.start()
    try:
        result = run_benchmark(cfg, prompts=prompt_builder)
    finally:
        timer.cancel()
    assert result.partial
    assert 3 <= result.metrics.completed < 40
    assert len(result.results) < 40  # unsent requests are dropped
    assert result.metrics.duration_s < 2.0
    outputs = save_results([result], tmp_path, track=False)
    assert json.loads(outputs.record_path.read_text())["metrics"]["partial"] == 1.0


def test_stop_event_cancels_requests_in_flight(fake_server, prompt_builder):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result = run_benchmark(config(fake_server, workload=RandomWorkload(3, 4, 200), arrivals=PoissonArrivals(float("inf"))),
                           prompts=prompt_builder, stop=stop)
    assert result.partial and result.metrics.cancelled == 3 and len(result.results) == 3
    assert all(r.error_kind == "cancelled" and 0 <= r.sent_s < 0.3 for r in result.results)


def test_sweep_outputs_record_csv_plots_and_mlflow_run(fake_server, prompt_builder, tmp_path, tracking_uri, client):
    results = sweep_rates(config(fake_server, workload=RandomWorkload(6, 8, 3)), [50.0, 100.0], prompts=prompt_builder)
    assert [r.request_rate_per_s for r in results] == [50.0, 100.0]
    assert [r.metrics.completed for r in results] == [6, 6]
    outputs = save_results(results, tmp_path / "out", ttft_p99_slo_s=10.0, tracking_uri=tracking_uri)
    assert {p.name for p in outputs.plots} == {"latency_cdf.png", "latency_vs_rate.png"}
    for path in outputs.requests_csvs:
        with path.open() as handle:
            assert len(list(csv.DictReader(handle))) == 6
    record = json.loads(outputs.record_path.read_text())
    assert len(record["children"]) == 2 and record["metrics"]["max_qps_request_rate_per_s"] == 100.0
    run = client.get_run(outputs.run_id)
    assert run.data.metrics["max_qps_request_rate_per_s"] == 100.0
    assert run.info.status == "FINISHED"


def test_trace_replay_sends_trace_lengths_on_scaled_timestamps(fake_server, prompt_builder, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,5,2\n0.2,7,3\n0.4,9000,4\n0.6,5,2\n")
    workload = TraceWorkload(trace, speedup=2.0, max_duration_s=0.3, max_context_tokens=64)
    result = run_benchmark(config(fake_server, workload=workload, arrivals=None), prompts=prompt_builder)
    rows = [(r.scheduled_s, r.input_tokens, r.output_tokens) for r in result.results]
    assert rows == [(0.0, 5, 2), (0.1, 7, 3), (0.2, 60, 4)]  # 0.6 s / 2 is past 0.3 s; 9000 clipped
    assert all(r.sent_s >= r.scheduled_s for r in result.results)
    assert math.isnan(result.request_rate_per_s)


def test_telemetry_is_sampled_and_gpu_metrics_only_with_a_gpu(fake_server, prompt_builder):
    flat = run_benchmark(config(fake_server), prompts=prompt_builder).flat_metrics()
    assert flat["telemetry.samples"] >= 1 and "telemetry.cpu_util_mean_pct" in flat
    assert ("telemetry.gpu_util_mean_pct" in flat) == (gpu_count() > 0)
    assert ("telemetry.gpu_mem_used_max_mib" in flat) == (gpu_count() > 0)


def test_concurrency_sweep_caps_each_point(fake_server, prompt_builder):
    cfg = config(fake_server, workload=RandomWorkload(8, 4, 3), arrivals=PoissonArrivals(float("inf")))
    results = sweep_concurrency(cfg, [1, 4], prompts=prompt_builder)
    assert [r.config.max_concurrency for r in results] == [1, 4]
    assert fake_server.log.max_in_flight == 4
    # One slot: each request waits for the one before, so the last goes out later than with four.
    assert results[0].results[-1].sent_s > results[1].results[-1].sent_s
    assert plot_latency_vs_concurrency(results).axes
