"""Traces, multi-day workloads (envelopes, flash sales, replay) and engine profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab.scale.engine_profile import EngineProfile, default_profile, load_profile
from lab.scale.trace import read_trace
from lab.scale.workload import DAY_S, FlashSale, WorkloadSpec, build_workload


def write_trace(path: Path, seconds: list[float]) -> Path:
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for s in seconds:
        minutes, sec = divmod(s, 60)
        lines.append(f"2023-11-16 18:{int(minutes):02d}:{sec:09.6f},100,10")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_trace_reader(tmp_path: Path) -> None:
    trace = read_trace(write_trace(tmp_path / "t.csv", [3.5, 0.25, 1.0, 61.0]))
    assert trace.arrival_s.tolist() == [0.0, 0.75, 3.25, 60.75]  # sorted, from the first request
    assert trace.counts_per_step(60).tolist() == [3, 1]
    assert trace.prompt_tokens.tolist() == [100] * 4


def test_flat_trace_modulated_by_daily_and_weekly_envelopes(tmp_path: Path) -> None:
    # A perfectly even hour (one request per second) so only the envelopes shape the rate.
    trace = read_trace(write_trace(tmp_path / "t.csv", [float(s) for s in range(3600)]))
    spec = WorkloadSpec(days=7, base_rate_per_s=10, daily_amplitude=0.5, peak_hour=14, weekend_factor=0.5,
                        flash_sales_per_day=0, mode="modulate")
    rate = build_workload(trace, spec).expected_rate_per_s
    assert rate[14 * 3600] == pytest.approx(15.0)  # Monday 14:00: 10 * (1 + 0.5)
    assert rate[2 * 3600] == pytest.approx(5.0)  # Monday 02:00: 10 * (1 - 0.5)
    assert rate[5 * DAY_S + 14 * 3600] == pytest.approx(7.5)  # Saturday 14:00: halved


def test_flash_sale_ramps_holds_and_ends() -> None:
    sale = FlashSale(start_s=100, duration_s=50, multiplier=3, ramp_s=10)
    factor = sale.factor(np.array([99, 105, 110, 159, 165, 170, 200], dtype=float))
    assert factor.tolist() == pytest.approx([1, 2, 3, 3, 2, 1, 1])


def test_workload_is_seeded_and_records_its_parameters(tmp_path: Path) -> None:
    trace = read_trace(write_trace(tmp_path / "t.csv", [float(s) for s in range(3600)]))
    spec = WorkloadSpec(days=1, base_rate_per_s=5, flash_sales_per_day=3, seed=7)
    a, b = build_workload(trace, spec), build_workload(trace, spec)
    assert np.array_equal(a.arrivals_per_s, b.arrivals_per_s) and a.flash_sales == b.flash_sales
    params = a.params()
    assert params["workload.mode_used"] == "modulate" and len(params["workload.flash_sales"]) == len(a.flash_sales)
    assert a.rate_series(60).values.mean() == pytest.approx(a.arrivals_per_s.mean(), rel=1e-9)


def test_a_trace_long_enough_is_replayed(tmp_path: Path) -> None:
    trace = read_trace(write_trace(tmp_path / "t.csv", [float(s) for s in range(0, 3600, 2)]))
    spec = WorkloadSpec(days=3000 / DAY_S)
    workload = build_workload(trace, spec)
    assert workload.mode == "replay"
    assert workload.total_requests == 1500 and workload.arrivals_per_s[:4].tolist() == [1, 0, 1, 0]


def test_engine_profile_interpolates_and_loads_from_a_record(tmp_path: Path) -> None:
    profile = default_profile()
    assert profile.step_time_s(8, 1024) == pytest.approx(0.01898)
    assert profile.step_time_s(12, 1024) == pytest.approx((0.01898 + 0.01996) / 2)
    # Service: prefill 1000 x 0.1 ms, then 100 steps at batch 8 and mean context 1050.
    assert profile.service_time_s(8, 1000, 100) == pytest.approx(0.1 + 100 * profile.step_time_s(8, 1050))
    record = {"experiment": "01_engine_roofline", "record_id": "r1", "environment": {"device": "H100"},
              "params": {"max_num_seqs": 32, "kv_cache_tokens": 1000, "model": "tiny"},
              "metrics": {"prefill_s_per_token": 0.001, "decode_step_s_b1_ctx128": 0.01,
                          "decode_step_s_b1_ctx512": 0.02, "decode_step_s_b32_ctx128": 0.03,
                          "decode_step_s_b32_ctx512": 0.04}}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    loaded = load_profile(path)
    assert loaded.device == "H100" and loaded.max_num_seqs == 32
    assert loaded.step_time_s(32, 320) == pytest.approx(0.035)
    roundtrip = tmp_path / "profile.json"
    roundtrip.write_text(json.dumps(loaded.to_dict()))
    assert load_profile(roundtrip) == loaded


def test_engine_profile_rejects_a_ragged_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        EngineProfile((1, 8), (128,), ((0.1,),), 0.001, 8, 100)
