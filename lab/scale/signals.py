"""What a scaling policy sees and what it says: `LoadSignals` in, `ScalingDecision` out.

Contract: `LoadSignals` is one observation of the service at `time_s`, built from what the gateway
and the replicas export (the gateway's queue length and request rate, the replicas' running
requests and KV-cache usage from /metrics) plus the pool's replica counts. A `Policy` (see
`lab.scale.policy`) returns a `ScalingDecision` per observation: the desired number of replicas
and the reason in words. `replica_slots` is how many requests one replica runs at once
(the engine's `max_num_seqs`), so `concurrency_utilization` is comparable across fleet sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class LoadSignals:
    time_s: float
    request_rate_per_s: float  # arrivals at the gateway, averaged over its export window
    queue_length: int  # requests waiting in the gateway's tier queues
    running_requests: int  # requests in flight on ready replicas
    kv_cache_usage: float  # mean fraction of KV-cache blocks in use on ready replicas, 0..1
    ready_replicas: int
    starting_replicas: int  # started, not yet ready (cold start in progress)
    replica_slots: int  # concurrent requests per replica (max_num_seqs)

    def __post_init__(self) -> None:
        if self.replica_slots < 1:
            raise ValueError(f"replica_slots must be >= 1, got {self.replica_slots}")
        if min(self.queue_length, self.running_requests, self.ready_replicas, self.starting_replicas) < 0:
            raise ValueError("counts in LoadSignals must be >= 0")

    @property
    def provisioned_replicas(self) -> int:
        """Ready plus starting: what the fleet will have once cold starts finish."""
        return self.ready_replicas + self.starting_replicas

    @property
    def concurrency_utilization(self) -> float:
        """(running + queued) over the ready replicas' slots; > 1 means requests wait.

        With no ready replica any demand counts as infinite load, none as zero.
        """
        demand = self.running_requests + self.queue_length
        slots = self.ready_replicas * self.replica_slots
        if slots == 0:
            return float("inf") if demand else 0.0
        return demand / slots


class Action(str, Enum):
    HOLD = "hold"
    WARN = "warn"  # load crossed the warning level: no change yet, tell a human
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"


@dataclass(frozen=True)
class ScalingDecision:
    time_s: float
    desired_replicas: int
    action: Action
    reason: str  # in words, for logs and plots: which signal, which threshold
    policy: str

    def __post_init__(self) -> None:
        if self.desired_replicas < 0:
            raise ValueError(f"desired_replicas must be >= 0, got {self.desired_replicas}")
