"""The fleet simulator: a day of traffic in seconds, by simulating cohorts, not tokens.

Contract: `simulate(workload, policy, config)` runs a tick-based discrete-event simulation (1 s
ticks) and returns a `SimResult`. Each second: replicas change state (`Fleet.advance`: cold
starts finish, spot notices arrive, drains end); requests that finished free their slots; the
second's arrivals are split across tiers (seeded multinomial) and queued as one cohort per tier,
beyond a tier's `max_queue` they are shed; cohorts older than the tier's timeout time out; free
slots (ready, non-draining replicas x `max_num_seqs`) admit queued cohorts by tier priority, FIFO.
An admitted cohort holds its slots for the service time of the engine profile at the current batch
size (prefill of the mean prompt, then one decode step per mean output token) and completes then.
The policy sees `LoadSignals` every `control_interval_s` and the fleet reconciles to its target.
After the workload ends, the loop runs on without arrivals until every queue and slot is empty, so
every request is served, shed or timed out (`TierStats.conserved`). A request meets its SLO when
its queue wait (whole ticks) plus its own prefill time (from the trace's prompt sizes) is within
the tier's `slo_ttft_s`; shed and timed-out requests miss it. Per-request work happens only in
precomputed tables, so a day at 100 requests/s takes seconds (`SimResult.wall_s`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lab.scale.cost import CostReport, FleetPlan, Prices, SpotMarket, bill
from lab.scale.engine_profile import EngineProfile, default_profile
from lab.scale.policy import Policy
from lab.scale.signals import Action, LoadSignals, ScalingDecision
from lab.scale.tier_queue import TierQueue, TierStats
from lab.scale.tiers import SimulatedTier, default_tiers, validate_tiers
from lab.scale.timeline import Timeline
from lab.scale.workload import Workload


@dataclass(frozen=True)
class SimConfig:
    plan: FleetPlan = field(default_factory=FleetPlan)
    spot: SpotMarket = field(default_factory=SpotMarket)
    prices: Prices = field(default_factory=Prices)
    profile: EngineProfile = field(default_factory=default_profile)
    tiers: tuple[SimulatedTier, ...] = field(default_factory=default_tiers)
    initial_replicas: int = 1
    control_interval_s: int = 1  # how often the policy is asked
    rate_window_s: int = 10  # the gateway's request-rate export window
    seed: int = 0

    def __post_init__(self) -> None:
        validate_tiers(self.tiers)
        if self.initial_replicas < 0 or self.control_interval_s < 1 or self.rate_window_s < 1:
            raise ValueError("need initial_replicas >= 0, control_interval_s >= 1, rate_window_s >= 1")


@dataclass(frozen=True)
class SimResult:
    policy: str
    plan: FleetPlan
    tiers: tuple[TierStats, ...]
    cost: CostReport
    timeline: Timeline
    decisions: tuple[ScalingDecision, ...]  # changes of target only
    interruptions: int
    replica_starts: int
    drain_s: int  # seconds simulated after the workload ended
    wall_s: float

    def tier(self, name: str) -> TierStats:
        return next(t for t in self.tiers if t.name == name)

    @property
    def total_requests(self) -> int:
        return sum(t.arrived for t in self.tiers)

    @property
    def slo_violations(self) -> float:
        return sum(t.arrived - t.within_slo for t in self.tiers)


def _slo_tables(tiers: tuple[SimulatedTier, ...], prefill_s: np.ndarray) -> list[list[float]]:
    """table[k][w]: share of tier k's requests meeting the SLO after waiting w whole seconds."""
    ordered = np.sort(prefill_s)
    return [[float(np.searchsorted(ordered, tier.slo_ttft_s - w, side="right")) / len(ordered)
             for w in range(math.floor(tier.timeout_s) + 1)] for tier in tiers]


def _service_ticks(workload: Workload, profile: EngineProfile) -> list[int]:
    """ticks[b]: whole seconds a request holds a slot when b sequences run per replica."""
    prompt, output = float(workload.prompt_tokens.mean()), float(workload.output_tokens.mean())
    return [max(1, round(profile.service_time_s(max(b, 1), prompt, output)))
            for b in range(profile.max_num_seqs + 1)]


def simulate(workload: Workload, policy: Policy, config: SimConfig | None = None) -> SimResult:
    from lab.scale.fleet import Fleet

    cfg = config or SimConfig()
    started = time.perf_counter()
    tiers, profile = cfg.tiers, cfg.profile
    rng = np.random.default_rng(cfg.seed)
    horizon = workload.duration_s
    split = rng.multinomial(workload.arrivals_per_s, [t.share for t in tiers]).tolist()  # (T, tiers)
    slo_table = _slo_tables(tiers, np.asarray(profile.prefill_time_s(workload.prompt_tokens)))
    service_ticks = _service_ticks(workload, profile)
    slots_per_replica = profile.max_num_seqs
    kv_tokens_per_request = float(workload.prompt_tokens.mean() + workload.output_tokens.mean() / 2)

    fleet = Fleet(cfg.plan, cfg.spot, seed=cfg.seed)
    policy.reset()
    target = cfg.initial_replicas
    fleet.reconcile(target, -cfg.plan.startup_s)  # the initial fleet is warm at t = 0
    queues = [TierQueue(tier, table) for tier, table in zip(tiers, slo_table)]  # highest priority first
    completions = [0] * (horizon + 1)  # requests finishing at each second
    running = 0
    window = deque([0] * cfg.rate_window_s)
    window_sum = 0
    timeline = Timeline.empty(horizon)
    decisions: list[ScalingDecision] = []
    drain_limit = horizon + max(q.timeout_ticks for q in queues) + max(service_ticks) + int(cfg.plan.startup_s) + 2

    t = 0
    while t < horizon or any(q.queued for q in queues) or running:
        if t >= drain_limit:
            raise RuntimeError("the simulation did not drain: a request would vanish")  # cannot happen
        fleet.advance(float(t))
        if t < len(completions):
            running -= completions[t]
        arrivals = split[t] if t < horizon else None
        for k, q in enumerate(queues):
            if arrivals is not None and arrivals[k]:
                q.arrive(t, arrivals[k])
            q.expire(t)
        queued = sum(q.queued for q in queues)
        ready = fleet.ready_count(float(t))
        free = ready * slots_per_replica - running
        if free > 0 and queued:
            # One service time for everything admitted this second, at the batch the replicas will run.
            done_at = t + service_ticks[min(slots_per_replica, (running + queued) // ready)]
            while len(completions) <= done_at:
                completions.append(0)
            for q in queues:  # strict priority between tiers, FIFO inside one
                taken = q.admit(t, free)
                free -= taken
                running += taken
                completions[done_at] += taken
                queued -= taken
                if free <= 0:
                    break
        arrived_now = sum(arrivals) if arrivals is not None else 0
        window_sum += arrived_now - window.popleft()
        window.append(arrived_now)
        if t < horizon and t % cfg.control_interval_s == 0:
            starting = fleet.starting_count(float(t))
            signals = LoadSignals(
                time_s=float(t), request_rate_per_s=window_sum / cfg.rate_window_s, queue_length=queued,
                running_requests=running,
                kv_cache_usage=(min(1.0, running * kv_tokens_per_request / (ready * profile.kv_cache_tokens))
                                if ready else 0.0),
                ready_replicas=ready, starting_replicas=starting, replica_slots=slots_per_replica)
            decision = policy.decide(signals)
            if decision.action in (Action.SCALE_UP, Action.SCALE_DOWN) and decision.desired_replicas != target:
                target = decision.desired_replicas
                decisions.append(decision)
        fleet.reconcile(target, float(t))
        if t < horizon:
            timeline.record(t, arrived_now, queued, running, ready, fleet.provisioned, fleet.alive, target)
            fleet.accrue(1.0)
        t += 1

    cost = bill(fleet.replica_seconds, float(horizon), cfg.plan, cfg.prices)
    return SimResult(policy.name, cfg.plan, tuple(q.stats for q in queues), cost, timeline, tuple(decisions),
                     fleet.interruptions, fleet.starts, t - horizon, time.perf_counter() - started)
