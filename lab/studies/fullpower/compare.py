"""Measure each engine's replica the way notebook 03 compares the peers with full power.

Contract: `ComparePlan` is the sweep shared by every engine (same sizing, same SLO, same concurrency
caps, the same rates unless `peer_rates_per_s` gives a much slower peer its own; `baseline_rates_per_s`
is the older spelling for the peer named "baseline"), validated at construction.
`measure_engine(name, spec, config, plan)` starts the replica (`lab.studies.launcher.serve_replica`),
runs the rate sweep (`lab.studies.fullpower.load_sweep.sweep_load`, probing down to `floor_rate_per_s`
when no rate meets the SLO) then, when the plan has caps, the concurrency sweep (`sweep_knee`) against it
with `config` (workload, seed, timeout) pointed at its URL and the plan's arrival process (each rate point
sets its rate), reading the longest gap between engine steps around every point from its /metrics where
it exports one (`lab.studies.fullpower.step_gaps`: our engine), stops it, and returns an `EngineRun`.
`measure_comparison(peers, fullpower, config, plan)` runs every peer (name -> spec, in order), then full
power, one after the other (the replicas never share the card, and all see the same prompts: same seed),
full power with each peer's maximum load (`lab.studies.fullpower.headline.max_load`) added to its rates,
so the P99 E2E at each peer's maximum load is measured on both; it returns the peers' runs, then full
power's. `comparison_children(runs)` gives one child `ResultRecord` per sweep point (params name the engine
and the sweep; metrics add `longest_step_gap_s` where measured) and `write_requests_csvs(runs, out_dir)`
one per-request CSV per point.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.bench.arrivals import ConstantArrivals, PoissonArrivals
from lab.studies.fullpower.headline import FULLPOWER, EngineRun, max_load
from lab.studies.fullpower.load_sweep import sweep_knee, sweep_load
from lab.studies.fullpower.step_gaps import StepGapProbe
from lab.bench.prompts import PromptBuilder
from lab.bench.record import point_params, write_requests_csv
from lab.studies.launcher import ReplicaSpec, serve_replica
from lab.bench.runner import BenchConfig
from lab.errors import LabError

if TYPE_CHECKING:
    from lab.track.record import ResultRecord


ARRIVALS = {"poisson": PoissonArrivals, "constant": ConstantArrivals}  # each point sets its own rate


@dataclass(frozen=True)
class ComparePlan:
    rates_per_s: tuple[float, ...]  # offered rates of the load sweep (full power's; by default the baseline's too)
    arrival: str = "poisson"  # poisson (vLLM's default) or constant (evenly spaced: short points, less noise)
    ttft_p99_slo_s: float = 0.5  # the SLO that defines the maximum QPS
    point_duration_s: float = 20.0  # each rate point sends about rate * this many requests
    min_requests: int = 8  # ... but at least this many
    max_requests: int | None = None  # ... and at most this many
    misses_before_stop: int = 2  # consecutive SLO misses that end an engine's load sweep
    knee_concurrencies: tuple[int, ...] = ()  # caps on requests in flight; () skips the knee sweep
    knee_requests_per_slot: float = 2.0  # requests per cap slot at each knee point
    ready_timeout_s: float = 600.0  # replica start to /ready
    baseline_rates_per_s: tuple[float, ...] | None = None  # the "baseline" peer's own rates; None: `rates_per_s`
    floor_rate_per_s: float | None = None  # no rate met the SLO: halve the lowest down to this; None: no probing
    peer_rates_per_s: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)  # a peer's own rates

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates_per_s", _rates("rates_per_s", self.rates_per_s))
        if self.baseline_rates_per_s is not None:
            object.__setattr__(self, "baseline_rates_per_s", _rates("baseline_rates_per_s", self.baseline_rates_per_s))
        object.__setattr__(self, "peer_rates_per_s", {
            name: _rates(f"peer_rates_per_s[{name!r}]", rates) for name, rates in self.peer_rates_per_s.items()})
        object.__setattr__(self, "knee_concurrencies", tuple(int(c) for c in self.knee_concurrencies))
        lowest = min(self.rates_per_s + (self.baseline_rates_per_s or ())
                     + tuple(r for rates in self.peer_rates_per_s.values() for r in rates))
        if self.floor_rate_per_s is not None and not 0 < self.floor_rate_per_s <= lowest:
            raise LabError(f"floor_rate_per_s must be in (0, lowest rate {lowest:g}], got {self.floor_rate_per_s}")
        if any(c < 1 for c in self.knee_concurrencies):
            raise LabError(f"knee_concurrencies must be >= 1, got {self.knee_concurrencies}")
        if self.arrival not in ARRIVALS:
            raise LabError(f"arrival must be one of {sorted(ARRIVALS)}, got {self.arrival!r}")
        if self.ttft_p99_slo_s <= 0:
            raise LabError(f"ttft_p99_slo_s must be > 0, got {self.ttft_p99_slo_s}")


    def rates_of(self, name: str) -> tuple[float, ...]:
        """The rates an engine sweeps: its own if the plan gives them, else `rates_per_s`."""
        if name in self.peer_rates_per_s:
            return self.peer_rates_per_s[name]
        if name == "baseline" and self.baseline_rates_per_s is not None:
            return self.baseline_rates_per_s
        return self.rates_per_s


def _rates(name: str, rates: Sequence[float]) -> tuple[float, ...]:
    rates = tuple(float(r) for r in rates)
    if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise LabError(f"{name} must be finite rates > 0, got {rates}")
    return rates


def measure_engine(name: str, spec: ReplicaSpec, config: BenchConfig, plan: ComparePlan, *,
                   rates_per_s: Sequence[float] | None = None, log_dir: Path | None = None,
                   prompts: PromptBuilder | None = None) -> EngineRun:
    """See the module docstring; `rates_per_s` overrides the plan's rates."""
    builder = prompts or PromptBuilder.deepseek()
    rates = tuple(rates_per_s) if rates_per_s is not None else plan.rates_per_s
    replica_logs = Path(log_dir) / name if log_dir is not None else None  # one folder per engine: logs survive
    with serve_replica(spec, ready_timeout_s=plan.ready_timeout_s, log_dir=replica_logs) as replica:
        target = dataclasses.replace(config, base_url=replica.url, arrivals=ARRIVALS[plan.arrival](1.0))
        floor = None if plan.floor_rate_per_s is None else min(plan.floor_rate_per_s, min(rates))
        probe = StepGapProbe(replica.url)
        load = sweep_load(target, rates, point_duration_s=plan.point_duration_s,
                          ttft_p99_slo_s=plan.ttft_p99_slo_s, min_requests=plan.min_requests,
                          max_requests=plan.max_requests, misses_before_stop=plan.misses_before_stop,
                          floor_rate_per_s=floor, prompts=builder, wrap=probe.run)
        knee = ()
        if plan.knee_concurrencies:
            knee = sweep_knee(target, plan.knee_concurrencies, requests_per_slot=plan.knee_requests_per_slot,
                              min_requests=plan.min_requests, prompts=builder, wrap=probe.run)
    return EngineRun(name=name, load=load, knee=knee, ready_after_s=replica.ready_after_s,
                     load_step_gaps=tuple(probe.gap_of(r) for r in load),
                     knee_step_gaps=tuple(probe.gap_of(r) for r in knee))


def measure_comparison(peers: Mapping[str, ReplicaSpec], fullpower: ReplicaSpec, config: BenchConfig,
                       plan: ComparePlan, *, log_dir: Path | None = None,
                       prompts: PromptBuilder | None = None) -> tuple[EngineRun, ...]:
    """See the module docstring: the peers' runs in the order given, then full power's."""
    if FULLPOWER in peers or not peers:
        raise LabError(f"measure_comparison needs at least one peer, none named {FULLPOWER!r}; got {list(peers)}")
    builder = prompts or PromptBuilder.deepseek()
    runs = [measure_engine(name, spec, config, plan, rates_per_s=plan.rates_of(name), log_dir=log_dir,
                           prompts=builder) for name, spec in peers.items()]
    rates = list(plan.rates_per_s)
    for run in runs:
        peer_max = max_load(run.load, plan.ttft_p99_slo_s)
        if peer_max is not None and not any(math.isclose(peer_max.offered_per_s, r) for r in rates):
            rates.append(peer_max.offered_per_s)  # the P99 E2E comparison needs full power at this load too
    full = measure_engine(FULLPOWER, fullpower, config, plan, rates_per_s=rates, log_dir=log_dir, prompts=builder)
    return (*runs, full)


def comparison_children(runs: Sequence[EngineRun], experiment: str) -> list[ResultRecord]:
    from lab.track import ResultRecord

    return [
        ResultRecord(experiment=experiment, params={"engine": run.name, "sweep": sweep, **point_params(result)},
                     metrics={**result.flat_metrics(), **_gap_metrics(gap)})
        for run in runs
        for sweep, results, gaps in (("load", run.load, run.load_step_gaps), ("knee", run.knee, run.knee_step_gaps))
        for result, gap in zip(results, gaps or (None,) * len(results))
    ]


def _gap_metrics(gap) -> dict[str, float]:
    """A point's longest step gap, where the server measured one (our engine); peers have none."""
    if gap is None or math.isnan(gap.longest_s):
        return {}
    return {"longest_step_gap_s": gap.longest_s, "longest_step_gap_is_upper_bound": float(gap.is_upper_bound),
            "num_step_gaps": float(gap.num_gaps)}


def write_requests_csvs(runs: Sequence[EngineRun], out_dir: Path) -> list[Path]:
    """`<engine>_<sweep>_<i>.csv` per point: one row per request sent (`lab.bench.record.request_rows`)."""
    paths = []
    for run in runs:
        for sweep, results in (("load", run.load), ("knee", run.knee)):
            for i, result in enumerate(results):
                if result.results:
                    paths.append(write_requests_csv(result, Path(out_dir) / f"{run.name}_{sweep}_{i}.csv"))
    return paths
