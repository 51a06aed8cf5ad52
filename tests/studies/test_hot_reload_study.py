"""The hot-reload study: its window arithmetic and metrics on hand-made results, its config's refusals, its corrupt
sources, and one short real run against a 2-layer tiny replica on the CPU (a switch, a drain, a missing source)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lab.bench.arrivals import PoissonArrivals
from lab.bench.metrics import compute_metrics, metrics_by_tier
from lab.bench.runner import BenchConfig, BenchResult
from lab.errors import LabError
from lab.studies.hot_reload.admin import Completion, ReloadCall
from lab.studies.hot_reload.config import ReloadStep, StudyConfig, reload_plan, study_configs
from lab.studies.hot_reload.sources import CorruptSource, make_corrupt_source
from lab.studies.hot_reload.study import HotReloadRun, RefusalCheck, ReloadOutcome, run_study
from lab.studies.hot_reload.summary import run_metrics, study_metrics, target_metrics, target_rows
from lab.studies.hot_reload.windows import (
    ReloadWindow, itl_intervals, p99_ms, reload_window, split, token_times, ttft_intervals,
)
from tests.bench.helpers import failed, ok

T0 = 1_000.0  # the load's wall-clock start in the hand-made runs
TINY2 = {"num_hidden_layers": 2}


def sent(index: int, sent_s: float, ttft_s: float, itl_s: tuple[float, ...]):
    row = ok(index, ttft_s, ttft_s + sum(itl_s), len(itl_s) + 1, itl_s=itl_s)
    return type(row)(**{**row.__dict__, "sent_s": sent_s})


# ---- windows ---------------------------------------------------------------------------------------------------
def test_token_times_are_the_send_plus_ttft_then_each_gap_in_turn() -> None:
    assert token_times(sent(0, 1.0, 0.5, (0.1, 0.2)), T0) == pytest.approx([1001.5, 1001.6, 1001.8])
    assert token_times(failed(1, "timeout"), T0) == []


def test_a_reload_window_runs_from_its_start_to_its_switch_widened_on_both_sides() -> None:
    window = reload_window(1010.0, 1012.0, 0.5, "switch seed1")
    assert (window.start, window.end) == (1009.5, 1012.5)
    assert window.overlaps(1009.0, 1009.5) and window.overlaps(1012.5, 1013.0)  # touching counts
    assert not window.overlaps(1009.0, 1009.49) and not window.overlaps(1012.51, 1013.0)


def test_split_puts_gaps_and_first_token_waits_that_overlap_a_window_around_it() -> None:
    rows = [sent(0, 0.0, 0.2, (0.1, 0.1, 0.1)),  # tokens at 1000.2 .3 .4 .5: all before the window
            sent(1, 4.0, 3.0, (0.3, 0.1)),  # waits 1004 -> 1007 across the window, then gaps ending 1007.3, 1007.4
            sent(2, 5.2, 0.1, (0.4,)),  # first token 1005.3 (inside), its gap 1005.3 -> 1005.7 inside
            failed(3, "http_500")]
    windows = [ReloadWindow("w", 1005.0, 1006.0)]
    ttft = split(ttft_intervals(rows, T0), windows)
    assert sorted(ttft.around) == pytest.approx([0.1, 3.0]) and ttft.steady == pytest.approx((0.2,))
    itl = split(itl_intervals(rows, T0), windows)
    assert itl.around == pytest.approx((0.4,)) and sorted(itl.steady) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.3])


def test_p99_is_numpys_linear_interpolation_in_ms_and_nan_for_nothing() -> None:
    assert p99_ms([0.010] * 99 + [0.110]) == pytest.approx(10.0 + 0.01 * 100.0)  # 99th of 100: 1 % of the way up
    assert math.isnan(p99_ms([]))


# ---- metrics on a hand-made run --------------------------------------------------------------------------------
def bench(rows) -> BenchResult:
    return BenchResult(config=BenchConfig(arrivals=PoissonArrivals(1.0)), model="tiny", results=tuple(rows),
                       metrics=compute_metrics(rows, 10.0), tier_metrics=metrics_by_tier(rows, 10.0), telemetry=None,
                       partial=False, num_planned=len(rows), started_at=T0)


def call(sent_at: float, answered_at: float, **record) -> ReloadCall:
    return ReloadCall(sent_at, answered_at, 200, record=record)


def hand_made_run(window_s: float = 0.5, failures: int = 0) -> HotReloadRun:
    steps = (ReloadStep("switch", 2.0, 1), ReloadStep("drain", 6.0, 2), ReloadStep("corrupt", 8.0))
    config = StudyConfig("tiny", steps, device="cpu", hf_overrides=TINY2, load_duration_s=10.0, window_s=window_s,
                         corrupt_source="missing")
    switch = ReloadOutcome(steps[0], "tiny", call(1002.0, 1003.1, outcome="switched", started_at=1002.0, at=1003.0,
                                                   pause_ms=4.0, version="tiny@seed1", generation=1))
    drain = ReloadOutcome(steps[1], "tiny", call(1006.0, 1006.5, outcome="draining", started_at=1006.0, at=1006.4,
                                                  version="tiny@seed2", generation=2),
                          promoted={"outcome": "promoted", "at": 1007.0, "pause_ms": 12.0, "generation": 2})
    refused = ReloadOutcome(steps[2], "/x/missing", ReloadCall(1008.0, 1008.2, 400, error_code="reload_refused",
                                                               error_message="source '/x/missing' is neither a preset"))
    rows = [sent(0, 0.0, 0.1, (0.05, 0.05)),  # 1000.1 - 1000.2: steady
            sent(1, 2.5, 0.2, (0.5, 0.05)),  # first token 1002.7 inside the switch window [1001.5, 1003.5]
            sent(2, 4.0, 0.1, (0.02, 0.02)),  # 1004.1 - 1004.14: steady
            sent(3, 9.0, 0.1, (0.03,))]  # 1009.1: after the refusal's window [1007.5, 1008.7]
    rows += [failed(4 + i, "http_500") for i in range(failures)]
    corrupt = CorruptSource("missing", "/x/missing", "does not exist", "neither a preset")
    refusal = RefusalCheck(("tiny@seed2", 2), Completion(True, 200, "ok"), ("tiny@seed2", 2))
    return HotReloadRun(config, corrupt, 5.0, ("tiny@seed0", 0), bench(rows), (switch, drain, refused), refusal,
                        ("tiny@seed2", 2), (), ())


def test_windows_cover_a_switch_to_its_at_a_drain_to_its_promotion_and_a_refusal_to_its_answer() -> None:
    ends = [end for w in hand_made_run().windows() for end in (w.start, w.end)]
    assert ends == pytest.approx([1001.5, 1003.5, 1005.5, 1007.5, 1007.5, 1008.7])


def test_run_metrics_split_the_load_by_the_reload_windows_and_count_the_outcomes() -> None:
    m = run_metrics(hand_made_run())
    assert (m["reload_pause_ms_p50"], m["reload_pause_ms_max"]) == (8.0, 12.0)  # the switch's 4, the promotion's 12
    assert m["reload_duration_s_max"] == pytest.approx(1.0)  # start -> switch of both (1 s each)
    assert (m["requests"], m["failed_requests"]) == (4, 0)
    assert (m["itl_gaps_around_reload"], m["itl_gaps_steady"]) == (2, 5)
    assert m["itl_max_around_reload_ms"] == pytest.approx(500.0)
    assert m["itl_p99_steady_ms"] == pytest.approx(p99_ms([0.05, 0.05, 0.02, 0.02, 0.03]))
    assert m["ttft_p99_around_reload_ms"] == pytest.approx(200.0) and m["ttft_requests_steady"] == 3
    assert (m["reloads_switched"], m["drain_promoted"], m["reloads_refused"]) == (1, 1, 1)
    assert m["refused_named_defect"] == 1 and m["refusal_kept_serving"] == 1 and m["replica_ready_s"] == 5.0


def test_targets_are_reported_as_measured_and_failures_count_whatever_their_kind() -> None:
    rows = {r.target: r for r in target_rows(hand_made_run(failures=2))}
    assert not rows["pause"].met and "max 12.00 ms" in rows["pause"].measured  # the drain's 12 ms misses 10 ms
    assert not rows["no_failed_requests"].met and rows["no_failed_requests"].measured == "2 of 6 failed"
    assert not rows["itl_p99"].met  # 500 ms around against tens steady
    # Both gaps near a reload (0.5 s, 0.05 s) are the switch's: P99 = 0.05 + 0.99 * 0.45 s; the drain's window
    # [1005.5, 1007.5] saw no token, so it has no row of its own.
    assert not rows["itl_p99_switch"].met and "495.5 ms" in rows["itl_p99_switch"].measured
    assert "itl_p99_drain" not in rows
    assert rows["refused"].met and rows["drain_promoted"].met
    metrics = target_metrics(list(rows.values()))
    assert metrics["tiny_target_refused_met"] == 1.0 and metrics["targets_met_pct"] == pytest.approx(100.0 * 2 / 6)


def test_a_refusal_that_leaves_another_version_serving_misses_its_target() -> None:
    run = hand_made_run()
    changed = RefusalCheck(("tiny@seed2", 2), Completion(True, 200, "ok"), ("tiny@seed3", 3))
    run = HotReloadRun(**{**run.__dict__, "refusal": changed})
    assert run_metrics(run)["refusal_kept_serving"] == 0.0
    assert not {r.target: r for r in target_rows(run)}["refused"].met


def test_study_metrics_prefix_each_model_and_total_the_counts() -> None:
    m = study_metrics([hand_made_run(failures=1)])
    assert m["tiny_reload_pause_ms_max"] == 12.0 and m["tiny_failed_requests"] == 1.0
    assert (m["failed_requests"], m["reloads_switched"], m["reloads_refused"], m["drain_promoted"]) == (1, 1, 1, 1)
    assert m["reload_pause_ms_max"] == 12.0


# ---- config ----------------------------------------------------------------------------------------------------
def test_the_plan_alternates_seeds_then_drains_then_sends_the_corrupt_source() -> None:
    plan = reload_plan(3, 2.0, 5.0, seeds=(1, 2))
    assert [(s.kind, s.offset_s, s.seed) for s in plan] == [
        ("switch", 2.0, 1), ("switch", 7.0, 2), ("switch", 12.0, 1), ("drain", 17.0, 2), ("corrupt", 22.0, None)]
    assert [s.kind for s in reload_plan(1, 0.0, 1.0, drain=False, corrupt=False)] == ["switch"]


@pytest.mark.parametrize("make, match", [
    (lambda: ReloadStep("swap", 1.0, 1), "kind must be one of"),
    (lambda: ReloadStep("switch", 1.0), "needs a seed"),
    (lambda: ReloadStep("corrupt", 1.0, 3), "takes no seed"),
    (lambda: ReloadStep("switch", -1.0, 1), "offset_s"),
    (lambda: reload_plan(0, 1.0, 1.0, drain=False, corrupt=False), "plan is empty"),
    (lambda: reload_plan(2, 1.0, 0.0), "interval"),
    (lambda: StudyConfig("tiny", ()), "steps is empty"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 5.0, 1), ReloadStep("switch", 2.0, 2))), "time order"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 30.0, 1),), load_duration_s=30.0), "before the load ends"),
    (lambda: StudyConfig("/some/checkpoint", (ReloadStep("switch", 1.0, 1),)), "serves a preset"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 1.0, 1),), corrupt_source="zeros"), "corrupt_source"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 1.0, 1),), output_tokens=1), "output_tokens"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 1.0, 1),), max_concurrency=0), "max_concurrency"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 1.0, 1),), request_rate_per_s=0.0), "request_rate_per_s"),
    (lambda: StudyConfig("tiny", (ReloadStep("switch", 1.0, 1),), serve_flags=("--admin-key-hash", "x")), "admin"),
    (lambda: study_configs(["tiny", "r1-distill-qwen-1.5b"], {"tiny": "missing"}, reload_plan(1, 1.0, 1.0)),
     "r1-distill-qwen-1.5b"),
])
def test_bad_config_is_a_lab_error_naming_the_problem(make, match) -> None:
    with pytest.raises(LabError, match=match):
        make()


# ---- corrupt sources -------------------------------------------------------------------------------------------
def test_other_architecture_changes_a_field_the_overrides_leave_alone(tmp_path) -> None:
    source = make_corrupt_source("other-architecture", "tiny", TINY2, tmp_path)
    config = json.loads((source.path / "config.json").read_text())
    assert source.expect_in_error == "vocab_size"  # num_hidden_layers is overridden: the replica would undo it
    assert config["num_hidden_layers"] == 2 and config["vocab_size"] == 129280 + 1
    assert (source.path / "model.safetensors").is_file()
    with pytest.raises(LabError, match="is not a folder"):
        make_corrupt_source("missing", "tiny", {}, tmp_path / "absent")


def test_a_nan_checkpoint_has_exactly_one_non_finite_tensor_the_one_it_names(tmp_path) -> None:
    small = {"num_hidden_layers": 1, "vocab_size": 1024}
    source = make_corrupt_source("nan-checkpoint", "tiny", small, tmp_path)
    tensors = load_file(str(source.path / "model.safetensors"))
    bad = [name for name, t in tensors.items() if not torch.isfinite(t.float()).all()]
    assert bad == [source.expect_in_error] and torch.isnan(tensors[bad[0]].float()).all()


# ---- one real run ----------------------------------------------------------------------------------------------
def test_a_short_real_run_switches_drains_and_refuses_with_no_request_failed(tmp_path) -> None:
    steps = (ReloadStep("switch", 1.0, 1), ReloadStep("drain", 3.0, 2), ReloadStep("corrupt", 5.0))
    config = StudyConfig("tiny", steps, device="cpu", hf_overrides=TINY2, request_rate_per_s=1.0, load_duration_s=7.0,
                         input_tokens=8, output_tokens=4, max_concurrency=4, corrupt_source="missing", window_s=0.2,
                         request_timeout_s=60.0, drain_wait_s=60.0)
    run = run_study(config, tmp_path / "logs")
    switch, drain, corrupt = run.reloads
    assert (switch.call.outcome, switch.call.record["version"]) == ("switched", "tiny@seed1")
    assert drain.call.outcome == "draining" and drain.promoted["version"] == "tiny@seed2"
    assert corrupt.call.outcome == "refused" and "neither a preset" in corrupt.call.error_message
    assert run.refusal.kept_serving and run.refusal.version_after == ("tiny@seed2", 2)
    assert run.initial_version == ("tiny@seed0", 0) and run.final_version == ("tiny@seed2", 2)
    assert switch.pause_ms >= 0 and drain.pause_ms >= 0
    m = run_metrics(run)
    assert m["failed_requests"] == 0 and m["requests"] == 7
    assert (m["reloads_switched"], m["drain_promoted"], m["reloads_refused"], m["refusal_kept_serving"]) == (1, 1, 1, 1)
    # the replica's records and the load share one wall clock: every switch lies inside the load's span
    assert run.load.started_at < switch.switched_at < drain.switched_at < run.load.started_at + 60
    assert any('outcome="refused"' in line for line in run.weight_metrics)


# ---- the optional restart reference ----------------------------------------------------------------------------
def test_the_restart_reference_is_skipped_with_a_reason_or_measures_a_cold_start() -> None:
    from lab.studies.hot_reload.restart import restart_metrics, restart_references

    assert restart_references(["tiny"], "cpu", TINY2, 0) == ([], "skipped: COLDSTART_REPEATS is 0")
    pytest.importorskip("lab.bench.coldstart")  # the cold-start work's module; this study does not need it
    refs, note = restart_references(["tiny"], "cpu", TINY2, 1)
    (ref,) = refs
    assert "lab.bench.coldstart" in note and 0 < ref.ready_s <= ref.first_token_s
    assert set(restart_metrics(refs)) == {"tiny_restart_ready_s", "tiny_restart_first_token_s"}


def test_the_itl_plot_draws_a_run_whose_every_request_failed() -> None:
    # A load that failed entirely (V2-Lite's prompts outside its vocabulary, once) has no gap to put on a log axis.
    from lab.studies.hot_reload.plots import plot_itl

    run = hand_made_run()
    dead = HotReloadRun(**{**run.__dict__, "load": bench([failed(i, "http_400") for i in range(3)])})
    fig = plot_itl([dead])
    assert "no inter-token gaps" in [t.get_text() for t in fig.axes[0].texts][0]
    assert fig.axes[0].get_yscale() == "linear"
    assert plot_itl([run]).axes[0].get_yscale() == "log"


def test_the_load_uses_only_ids_the_served_model_has() -> None:
    steps = (ReloadStep("switch", 2.0, 1),)
    assert StudyConfig("deepseek-v2-lite", steps).vocab_size == 102_400
    assert StudyConfig("tiny", steps, hf_overrides={"vocab_size": 4096}).vocab_size == 4096


def test_the_switch_copy_rate_is_read_plus_write_of_the_weights_over_the_copy_time() -> None:
    run = hand_made_run()
    assert math.isnan(run_metrics(run)["reload_copy_bytes_per_s"])  # records without bytes: not known
    switch = run.reloads[0]
    record = {**switch.call.record, "bytes": 31.4e9, "switch_copy_ms": 20.0}
    timed = ReloadOutcome(switch.step, switch.source, dataclasses.replace(switch.call, record=record))
    changed = HotReloadRun(**{**run.__dict__, "reloads": (timed, *run.reloads[1:])})
    m = run_metrics(changed)
    assert m["reload_weight_bytes"] == 31.4e9
    assert m["reload_copy_bytes_per_s"] == pytest.approx(2 * 31.4e9 / 0.020)  # 3.14 TB/s
    assert "copying 31.40 GB in at 3.14 TB/s" in target_rows(changed)[0].measured
