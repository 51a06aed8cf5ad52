"""The live control loop: signals from a pool's replicas -> policy -> pool (and gateway).

Contract: `run_control_loop(pool, policy, reader, config, on_decision)` ticks every
`config.interval_s` for `config.duration_s` (None: until interrupted): refreshes the pool's
health, reads `LoadSignals` (`SignalReader`), asks the policy, keeps the pool at the latest
scale-up or scale-down target (replacing replicas whose process died), and, with a
`GatewaySync`, hands the ready endpoints to the gateway. Every tick's decision goes to
`on_decision` (the CLI prints it as a JSON line). Returns the decisions that changed the
replica count. The same `Policy` objects drive the simulator and this loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.scale.gateway_sync import GatewaySync
from lab.scale.policy import Policy
from lab.scale.pool import Pool
from lab.scale.replica_metrics import SignalReader
from lab.scale.signals import Action, LoadSignals, ScalingDecision


@dataclass(frozen=True)
class LoopConfig:
    interval_s: float = 1.0
    duration_s: float | None = None
    initial_replicas: int = 1

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or (self.duration_s is not None and self.duration_s < 0) or self.initial_replicas < 0:
            raise ValueError("need interval_s > 0, duration_s >= 0 (or None) and initial_replicas >= 0")


def run_control_loop(pool: Pool, policy: Policy, reader: SignalReader, config: LoopConfig,
                     gateway: GatewaySync | None = None,
                     on_decision: Callable[[LoadSignals, ScalingDecision], None] | None = None,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> list[ScalingDecision]:
    start = clock()
    target = config.initial_replicas
    pool.scale_to(target)
    changes: list[ScalingDecision] = []
    while config.duration_s is None or clock() - start < config.duration_s:
        tick_start = clock()
        pool.refresh()
        signals = reader.read(pool, tick_start - start)
        decision = policy.decide(signals)
        if decision.action in (Action.SCALE_UP, Action.SCALE_DOWN) and decision.desired_replicas != target:
            target = decision.desired_replicas
            changes.append(decision)
        pool.scale_to(target)  # every tick: also replaces replicas whose process died
        if gateway is not None:
            gateway.sync(pool.ready_endpoints())
        if on_decision is not None:
            on_decision(signals, decision)
        sleep(max(0.0, config.interval_s - (clock() - tick_start)))
    return changes
