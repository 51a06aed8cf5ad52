"""Synthetic workload lengths: vLLM's random range ratio, and chat lengths from a lognormal fitted
to a trace at run time (recovering known parameters, and the shipped Azure conversation trace)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.bench.arrivals import PoissonArrivals
from lab.bench.length_models import LognormalLengths
from lab.bench.tiers import single_tier
from lab.bench.traces import TraceRow
from lab.bench.workloads import ChatWorkload, RandomWorkload, RequestShape, plan_requests
from lab.errors import LabError


def test_range_ratio_zero_keeps_every_length_fixed():
    assert RandomWorkload(3, 100, 20).shapes(np.random.default_rng(0)) == (RequestShape(100, 20),) * 3


def test_range_ratio_draws_uniform_integers_in_the_vllm_interval():
    shapes = RandomWorkload(4000, 100, 20, range_ratio=0.5).shapes(np.random.default_rng(1))
    inputs, outputs = [s.input_tokens for s in shapes], [s.output_tokens for s in shapes]
    assert (min(inputs), max(inputs), min(outputs), max(outputs)) == (50, 150, 10, 30)  # both ends reached
    assert np.mean(inputs) == pytest.approx(100, abs=2) and np.mean(outputs) == pytest.approx(20, abs=0.5)
    assert len(set(inputs)) == 101  # every integer of [50, 150]


def test_range_ratio_lengths_stay_positive_and_are_validated():
    assert min(s.output_tokens for s in RandomWorkload(200, 2, 1, range_ratio=0.9).shapes()) >= 1
    with pytest.raises(LabError, match="range_ratio"):
        RandomWorkload(1, 10, 10, range_ratio=1.0)


def test_planned_prompts_have_the_drawn_lengths_and_the_seed_fixes_them(prompt_builder):
    workload = RandomWorkload(20, 40, 8, range_ratio=0.5)
    plan = plan_requests(workload, PoissonArrivals(5.0), single_tier(None), prompt_builder, "token-ids", seed=2)
    assert all(p.prompt.num_tokens == p.input_tokens for p in plan) and len({p.input_tokens for p in plan}) > 5
    faster = plan_requests(workload, PoissonArrivals(50.0), single_tier(None), prompt_builder, "token-ids", seed=2)
    assert [(p.input_tokens, p.output_tokens) for p in plan] == [(p.input_tokens, p.output_tokens) for p in faster]


def lognormal_rows(n: int, seed: int = 0) -> list[TraceRow]:
    rng = np.random.default_rng(seed)
    logs = rng.multivariate_normal([5.0, 3.0], [[0.25, 0.06], [0.06, 0.16]], size=n)  # std 0.5, 0.4; corr 0.3
    return [TraceRow(float(i), int(round(math.exp(a))), int(round(math.exp(b)))) for i, (a, b) in enumerate(logs)]


def test_the_lognormal_fit_recovers_known_parameters():
    fit = LognormalLengths.fit(lognormal_rows(20000))
    assert (fit.input_log_mean, fit.input_log_std) == pytest.approx((5.0, 0.5), abs=0.02)
    assert (fit.output_log_mean, fit.output_log_std) == pytest.approx((3.0, 0.4), abs=0.02)
    assert fit.log_correlation == pytest.approx(0.3, abs=0.03)


def test_chat_lengths_follow_the_fitted_trace_and_fit_the_context(tmp_path):
    trace = tmp_path / "trace.csv"
    rows = "".join(f"{r.arrival_s},{r.context_tokens},{r.generated_tokens}\n" for r in lognormal_rows(5000))
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    shapes = ChatWorkload(4000, max_context_tokens=4096, trace=trace).shapes(np.random.default_rng(3))
    assert np.median([s.input_tokens for s in shapes]) == pytest.approx(math.exp(5.0), rel=0.05)
    assert np.median([s.output_tokens for s in shapes]) == pytest.approx(math.exp(3.0), rel=0.05)
    small = ChatWorkload(500, max_context_tokens=100, trace=trace).shapes(np.random.default_rng(3))
    assert all(s.input_tokens >= 1 and s.output_tokens >= 1 and s.input_tokens + s.output_tokens <= 100
               for s in small)


def test_the_default_chat_workload_is_fitted_to_the_shipped_azure_conversation_trace():
    workload = ChatWorkload(10)
    described = workload.describe()
    assert described["workload"] == "chat" and described["trace"].endswith("azure_llm_2023_conv.csv")
    # The numbers the length model's docstring quotes: median input ~760, output ~150 tokens.
    assert described["input_log_mean"] == pytest.approx(6.63, abs=0.01)
    assert described["output_log_mean"] == pytest.approx(5.02, abs=0.01)


def test_a_chat_workload_runs_end_to_end_and_records_its_fit(fake_server, prompt_builder):
    from lab.bench.record import point_params
    from lab.bench.runner import BenchConfig, run_benchmark

    config = BenchConfig(base_url=fake_server.base_url, workload=ChatWorkload(5, max_context_tokens=64),
                         arrivals=PoissonArrivals(math.inf), num_warmups=0, show_progress=False,
                         telemetry_interval_s=0.05)
    result = run_benchmark(config, prompts=prompt_builder)
    assert result.metrics.completed == 5
    assert all(r.input_tokens + r.max_tokens <= 64 for r in result.results)
    params = point_params(result)
    assert params["workload"] == "chat" and params["input_log_std"] > 0
