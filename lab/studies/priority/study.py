"""Priority scheduling under overload: FCFS (the plain path) against the gateway's tiers, on a live service.

Contract (the logic of notebook `02_priority_scheduling`):
- `fcfs_setup(...)` / `tiers_setup(...)` return an `OverloadSetup`: the gateway config and the
  replica's `--scheduling-policy`. FCFS puts every key in one tier ("shared": one queue, first come
  first served, the longest tier timeout, the tiers' rate limits summed) in front of an `fcfs`
  replica; tiers use the gateway's defaults for the four tiers of `lab.tiers` (VIP 500 ms,
  realtime 2000 ms, async 30 s, batch 120 s queue timeouts) in front of a `priority` replica. Both
  admit at most `max_inflight` requests to the replica at once, so the queue sits in the gateway.
  The tiers setup keeps the gateway's defaults for overload: lower tiers run within a share of the
  slots (`max_inflight_share`), batch borrows the idle rest and gives a borrowed slot back to a
  higher tier that needs it (`borrow`, `reclaim_after_ms`), and a VIP or realtime request that waits
  too long preempts a running lower-tier request (`preempt_after_ms`); either way the cancelled
  request's client gets an explicit `preempted` error;
  `max_concurrency` overrides the per-tier caps.
- `tier_mix(fractions)`: a `lab.bench.TierMix` whose tiers send the example keys of
  `deploy/gateway.example.yaml` (`TIER_KEYS`); both setups hash the same keys into their config.
- `measure_capacity(url, model, ...)`: the sustained requests/s of a closed loop of `max_inflight`
  requests at a time (what the service completes when it is never idle).
- `run_setup(setup, replica, bench)` starts a `LocalService` for the setup (the `ReplicaSpec` with the
  setup's `--scheduling-policy` added), runs `bench` (a function of the gateway URL returning a
  `BenchResult`) and stops the service, even on error.
- `tier_outcomes(result, prefix, tiers)`: record-ready metrics per tier, e.g. `tiers_vip_success_pct`,
  `tiers_vip_e2e_p99_ms`, `fcfs_batch_shed_pct` (see `OUTCOME_METRICS`). A request is a success when
  its stream completed; "shed" means the gateway refused it explicitly (429 rate limit or 504 queue
  timeout); `preempted_pct` the gateway's explicit `preempted` error (a 503, or an SSE error event once
  streaming: its slot went to a higher tier); `timeout_pct` is the client giving up
  (`request_timeout_s`); `error_pct` everything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lab.bench.arrivals import PoissonArrivals
from lab.bench.metrics import LatencyStats
from lab.bench.client import RequestResult
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.tiers import TierMix, TierShare
from lab.bench.workloads import RandomWorkload
from lab.gateway.auth import hash_key
from lab.gateway.config import DEFAULT_TIERS, TierConfig
from lab.studies.launcher import LocalService, LocalServiceConfig, ReplicaSpec
from lab.tiers import TIER_NAMES

# The example keys of deploy/gateway.example.yaml (plain text is in its comments), one per tier of the
# tier table (lab.tiers): lab-only secrets.
TIER_KEYS = {name: f"sk-{name}-example" for name in TIER_NAMES}
SHED_KINDS = ("http_429", "http_504")  # the gateway's explicit refusals: rate limit, queue deadline
PREEMPTED_CODE = "preempted"  # the `code` of the gateway's error for a preempted request (lab.gateway.forward)
OUTCOME_METRICS = ("requests", "success_pct", "shed_pct", "preempted_pct", "timeout_pct", "error_pct",
                   "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms")


@dataclass(frozen=True)
class OverloadSetup:
    name: str  # fcfs | tiers: the prefix of its metrics
    scheduling_policy: str  # the replica's --scheduling-policy
    gateway_config: Mapping[str, Any]


def _tier_dict(tier: TierConfig) -> dict[str, Any]:
    return asdict(tier)


def _keys(tier_of_key: Callable[[str], str]) -> list[dict[str, str]]:
    return [{"name": f"example-{name}", "tier": tier_of_key(name), "hash": hash_key(key)}
            for name, key in TIER_KEYS.items()]


def tiers_setup(max_inflight: int, tiers: Sequence[TierConfig] = DEFAULT_TIERS,
                max_concurrency: Mapping[str, int] | None = None) -> OverloadSetup:
    """`max_concurrency` overrides tiers' caps by name (e.g. {"batch": 2} keeps slots free for VIP)."""
    overrides = dict(max_concurrency or {})
    unknown = sorted(set(overrides) - {t.name for t in tiers})
    if unknown:
        raise ValueError(f"max_concurrency names unknown tiers {unknown}")
    tiers = [replace(t, max_concurrency=int(overrides.get(t.name, t.max_concurrency))) for t in tiers]
    config = {"tiers": [_tier_dict(t) for t in tiers], "keys": _keys(lambda name: name),
              "queue": {"max_inflight": max_inflight}}
    return OverloadSetup("tiers", "priority", config)


def fcfs_setup(max_inflight: int, tiers: Sequence[TierConfig] = DEFAULT_TIERS) -> OverloadSetup:
    def summed(field: str) -> dict[str, float]:
        limits = [asdict(getattr(t, field)) for t in tiers]
        return {k: sum(limit[k] for limit in limits) for k in limits[0]}

    # Rate limits summed, so FCFS refuses no more than the tiers do together; the only difference
    # left is the order of service (and one deadline for all: the longest, as a plain queue has).
    shared = {"name": "shared", "priority": 0, "max_concurrency": max_inflight,
              "timeout_ms": max(t.timeout_ms for t in tiers), "tier_limit": summed("tier_limit"),
              "key_limit": summed("tier_limit")}
    config = {"tiers": [shared], "keys": _keys(lambda name: "shared"), "queue": {"max_inflight": max_inflight}}
    return OverloadSetup("fcfs", "fcfs", config)


def tier_mix(fractions: Mapping[str, float]) -> TierMix:
    unknown = sorted(set(fractions) - set(TIER_NAMES))
    if unknown:
        raise ValueError(f"unknown tiers {unknown}; the tiers are {list(TIER_NAMES)} (lab.tiers)")
    return TierMix(tuple(TierShare(name, TIER_KEYS[name], float(f)) for name, f in fractions.items()))


def measure_capacity(url: str, model: str, max_inflight: int, num_requests: int, input_tokens: int,
                     output_tokens: int, seed: int = 0) -> BenchResult:
    """A closed loop of `max_inflight` at a time; `.metrics.request_throughput_per_s` is the capacity."""
    config = BenchConfig(base_url=url, model=model, workload=RandomWorkload(num_requests, input_tokens, output_tokens),
                         max_concurrency=max_inflight, api_key=TIER_KEYS["vip"], seed=seed, show_progress=False)
    return run_benchmark(config)


def run_setup(setup: OverloadSetup, replica: ReplicaSpec, bench: Callable[[str], BenchResult],
              ready_timeout_s: float = 180.0) -> BenchResult:
    replica = replace(replica, extra_flags=(*replica.extra_flags, "--scheduling-policy", setup.scheduling_policy))
    service_config = LocalServiceConfig(gateway_config=setup.gateway_config, replica=replica,
                                        ready_timeout_s=ready_timeout_s)
    with LocalService(service_config) as service:
        return bench(service.gateway_url)


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else math.nan


def error_code(result: RequestResult) -> str | None:
    """The OpenAI-shaped error's `code` of a failed request (a JSON body or an SSE error event), if any."""
    try:
        error = json.loads(result.error_message or "")
    except ValueError:
        return None
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]  # a response body; an SSE error event carries the inner object
    return error.get("code") if isinstance(error, dict) else None


def tier_outcomes(result: BenchResult, prefix: str, tiers: Sequence[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for tier in tiers:
        rows = [r for r in result.results if r.tier == tier and r.error_kind != "cancelled"]
        kinds = [r.error_kind for r in rows if not r.success]
        done = [r for r in rows if r.success]
        ttft = LatencyStats.of([r.ttft_s for r in done])
        e2e = LatencyStats.of([r.e2e_s for r in done])
        shed = sum(k in SHED_KINDS for k in kinds)
        preempted = sum(error_code(r) == PREEMPTED_CODE for r in rows if not r.success)
        timeouts = sum(k == "timeout" for k in kinds)
        values = {"requests": len(rows), "success_pct": _pct(len(done), len(rows)), "shed_pct": _pct(shed, len(rows)),
                  "preempted_pct": _pct(preempted, len(rows)), "timeout_pct": _pct(timeouts, len(rows)),
                  "error_pct": _pct(len(kinds) - shed - preempted - timeouts, len(rows)),
                  "ttft_p50_ms": ttft.median_s * 1e3, "ttft_p99_ms": ttft.p99_s * 1e3,
                  "e2e_p50_ms": e2e.median_s * 1e3, "e2e_p99_ms": e2e.p99_s * 1e3}
        metrics.update({f"{prefix}_{tier}_{name}": float(values[name]) for name in OUTCOME_METRICS})
    return metrics


@dataclass(frozen=True)
class StudyConfig:
    model: str  # the served model name (the gateway's /v1/models needs a key, so it is not discovered)
    replica: ReplicaSpec  # what the service serves; --scheduling-policy is the setup's
    max_inflight: int  # requests the gateway lets through to the replica at once
    input_tokens: int
    output_tokens: int
    capacity_requests: int  # closed-loop requests that measure the sustainable rate
    overload_factor: float  # offered rate / sustainable rate
    load_duration_s: float  # seconds of arrivals at the offered rate
    fractions: Mapping[str, float]  # tier -> share of requests
    request_timeout_s: float  # the client gives up after this
    seed: int = 0
    tier_max_concurrency: Mapping[str, int] = field(default_factory=dict)  # overrides of the article's caps


@dataclass(frozen=True)
class StudyResult:
    capacity_per_s: float  # measured on the FCFS service, closed loop
    offered_per_s: float
    results: Mapping[str, BenchResult]  # setup name -> the overload run

    def metrics(self, tiers: Sequence[str]) -> dict[str, float]:
        metrics = {"capacity_req_per_s": self.capacity_per_s, "offered_req_per_s": self.offered_per_s,
                   "overload_factor": self.offered_per_s / self.capacity_per_s}
        for name, result in self.results.items():
            metrics[f"{name}_completed_req_per_s"] = result.metrics.request_throughput_per_s
            metrics.update(tier_outcomes(result, name, tiers))
        return metrics


def run_study(config: StudyConfig) -> StudyResult:
    """FCFS first (measuring the capacity on it), then the tiers, with the same seeded arrival plan."""
    measured: dict[str, float] = {}

    def overload(url: str) -> BenchResult:
        if "offered" not in measured:
            capacity = measure_capacity(url, config.model, config.max_inflight, config.capacity_requests,
                                        config.input_tokens, config.output_tokens, config.seed)
            measured["capacity"] = capacity.metrics.request_throughput_per_s
            measured["offered"] = config.overload_factor * measured["capacity"]
        num_requests = max(1, round(measured["offered"] * config.load_duration_s))
        workload = RandomWorkload(num_requests, config.input_tokens, config.output_tokens)
        bench = BenchConfig(base_url=url, model=config.model, workload=workload,
                            arrivals=PoissonArrivals(measured["offered"]), tiers=tier_mix(config.fractions),
                            request_timeout_s=config.request_timeout_s, seed=config.seed, show_progress=False)
        return run_benchmark(bench)

    results = {setup.name: run_setup(setup, config.replica, overload)
               for setup in (fcfs_setup(config.max_inflight),
                             tiers_setup(config.max_inflight, max_concurrency=config.tier_max_concurrency))}
    return StudyResult(measured["capacity"], measured["offered"], results)
