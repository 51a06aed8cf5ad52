"""`measure_comparison` without replicas: the peers run first, each on its own rates, and full power
then also runs at each peer's maximum load (so the P99 E2E there is measured on both)."""

from __future__ import annotations

import pytest

from lab.studies.fullpower import compare
from lab.studies.fullpower.compare import ComparePlan
from lab.studies.fullpower.headline import EngineRun
from lab.studies.launcher import ReplicaSpec
from lab.bench.runner import BenchConfig
from lab.errors import LabError
from tests.bench.helpers import bench_result


def fake_measure(calls: list, baseline_load: tuple, hf_cb_load: tuple = ()):
    def measure(name, spec, config, plan, *, rates_per_s=None, log_dir=None, prompts=None) -> EngineRun:
        calls.append((name, tuple(rates_per_s)))
        return EngineRun(name, load={"baseline": baseline_load, "hf_cb": hf_cb_load}.get(name, ()))
    return measure


@pytest.mark.parametrize(("baseline_load", "fullpower_rates"), [
    # Passes at 0.25, misses at 0.5: full power also runs at 0.25.
    ((bench_result(0.25, [0.1]), bench_result(0.5, [2.0])), (2.0, 4.0, 0.25)),
    # Misses everywhere down to the floor 0.125: the bound's rate is the comparison load.
    ((bench_result(0.125, [0.9]), bench_result(0.25, [2.0])), (2.0, 4.0, 0.125)),
    # Passes at a rate full power runs anyway: nothing added.
    ((bench_result(2.0, [0.1]),), (2.0, 4.0)),
])
def test_full_power_also_runs_at_the_baselines_max_load(monkeypatch, baseline_load, fullpower_rates):
    calls: list = []
    monkeypatch.setattr(compare, "measure_engine", fake_measure(calls, baseline_load))
    plan = ComparePlan(rates_per_s=[2.0, 4.0], baseline_rates_per_s=[0.25, 0.5], floor_rate_per_s=0.125)
    base, full = compare.measure_comparison({"baseline": ReplicaSpec("hf")}, ReplicaSpec("lab"), BenchConfig(), plan)
    assert calls == [("baseline", (0.25, 0.5)), ("fullpower", fullpower_rates)]
    assert (base.name, full.name) == ("baseline", "fullpower")


def test_every_peer_runs_first_on_its_rates_and_full_power_at_each_peers_max_load(monkeypatch):
    calls: list = []
    # hf generate passes at 0.25; hf-cb passes at 3 and misses at 6; before tuning runs on the shared rates.
    monkeypatch.setattr(compare, "measure_engine", fake_measure(
        calls, (bench_result(0.25, [0.1]),), (bench_result(3.0, [0.1]), bench_result(6.0, [2.0]))))
    plan = ComparePlan(rates_per_s=[2.0, 4.0], baseline_rates_per_s=[0.25], peer_rates_per_s={"hf_cb": [3.0, 6.0]})
    peers = {"hf_cb": ReplicaSpec("hf-cb"), "untuned": ReplicaSpec("lab"), "baseline": ReplicaSpec("hf")}
    runs = compare.measure_comparison(peers, ReplicaSpec("lab"), BenchConfig(), plan)
    assert calls == [("hf_cb", (3.0, 6.0)), ("untuned", (2.0, 4.0)), ("baseline", (0.25,)),
                     ("fullpower", (2.0, 4.0, 3.0, 0.25))]
    assert [run.name for run in runs] == ["hf_cb", "untuned", "baseline", "fullpower"]
    with pytest.raises(LabError, match="fullpower"):
        compare.measure_comparison({"fullpower": ReplicaSpec("lab")}, ReplicaSpec("lab"), BenchConfig(), plan)


def test_the_floor_must_be_below_every_rate():
    with pytest.raises(LabError, match="floor_rate_per_s"):
        ComparePlan(rates_per_s=[2.0], baseline_rates_per_s=[0.25], floor_rate_per_s=0.5)
