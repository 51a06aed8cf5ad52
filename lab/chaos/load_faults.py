"""Load faults and the drill load as chaostoolkit activities: plain arguments in, a JSON summary out.

Contract (each blocks for `duration_s`, then waits for the requests in flight; run them with
`"background": true` in an experiment so the fault steps run meanwhile):
- `run_drill_load(base_url, tiers, duration_s, summary_path=None, ...)`: the client-side truth of a
  drill: `tiers` is `{"vip": {"api_key": "...", "rate_per_s": 2.0}, ...}`, each tier a Poisson stream.
- `overload_tier(base_url, tier, api_key, rate_per_s, factor=5.0, duration_s=...)`: one tier at
  `factor` times its usual rate for the whole duration (the issue's "one tier overloaded 5x").
- `flash_sale(base_url, tiers, burst_start_s, burst_end_s, factor=5.0, duration_s=...)`: every tier's
  rate jumps `factor` times between the burst marks, then falls back (`FlashSaleArrivals`).
Each returns the `DrillResult.summary()` with `action` and `backend: "load"`, and writes summary and
timeline to `summary_path` when given (JSON: the notebook reads it for plots; the probes
`lab.chaos.steady_state.lost_requests` and `drill_success_rate` read it). Bad arguments are `LabError`s
naming them.
"""

from __future__ import annotations

import time
from typing import Any

from lab.bench.arrivals import FlashSaleArrivals
from lab.chaos.loadgen import DrillLoad, LoadConfig, TierLoad
from lab.chaos.records import FaultRecord
from lab.errors import LabError

__all__ = ["run_drill_load", "overload_tier", "flash_sale"]


def parse_tiers(tiers: dict[str, Any]) -> list[tuple[str, str | None, float]]:
    """`{"vip": {"api_key": K, "rate_per_s": R}}` -> [(name, key, rate)], checked."""
    if not isinstance(tiers, dict) or not tiers:
        raise LabError('tiers must be a non-empty object like {"vip": {"api_key": "sk-...", "rate_per_s": 2}}')
    parsed = []
    for name, spec in tiers.items():
        if not isinstance(spec, dict) or set(spec) - {"api_key", "rate_per_s"}:
            raise LabError(f"tier {name!r}: expected {{\"api_key\": ..., \"rate_per_s\": ...}}, got {spec!r}")
        rate = spec.get("rate_per_s")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise LabError(f"tier {name!r}: rate_per_s must be a number > 0, got {rate!r}")
        parsed.append((str(name), spec.get("api_key"), float(rate)))
    return parsed


def _run(action: str, config: LoadConfig, duration_s: float, summary_path: str | None, extra: dict) -> dict:
    if not duration_s > 0:
        raise LabError(f"duration_s must be > 0, got {duration_s}")
    load = DrillLoad(config).start()
    time.sleep(duration_s)  # the thread sends; this is the activity's own duration
    result = load.stop()
    if summary_path:
        result.save(summary_path)
    record = FaultRecord(action, config.base_url, "load", {**extra, "duration_s": duration_s})
    return {**record.as_dict(), **result.summary(), "summary_path": summary_path}


def _config(base_url: str, tiers: list[TierLoad], duration_s: float, kwargs: dict) -> LoadConfig:
    # The load never outlives its activity by more than one request deadline.
    return LoadConfig(base_url=base_url, tiers=tuple(tiers), max_duration_s=duration_s, **kwargs)


def run_drill_load(base_url: str, tiers: dict[str, Any], duration_s: float, summary_path: str | None = None,
                   model: str | None = None, max_tokens: int = 8, request_timeout_s: float = 30.0,
                   seed: int = 0) -> dict:
    loads = [TierLoad.poisson(name, key, rate) for name, key, rate in parse_tiers(tiers)]
    config = _config(base_url, loads, duration_s, dict(model=model, max_tokens=max_tokens,
                                                       request_timeout_s=request_timeout_s, seed=seed))
    return _run("run_drill_load", config, duration_s, summary_path, {})


def overload_tier(base_url: str, tier: str, api_key: str | None, rate_per_s: float, factor: float = 5.0,
                  duration_s: float = 30.0, summary_path: str | None = None, model: str | None = None,
                  max_tokens: int = 8, request_timeout_s: float = 30.0, seed: int = 0) -> dict:
    ((name, key, rate),) = parse_tiers({tier: {"api_key": api_key, "rate_per_s": rate_per_s}})
    if not factor > 0:
        raise LabError(f"factor must be > 0, got {factor}")
    config = _config(base_url, [TierLoad.poisson(name, key, rate * factor)], duration_s,
                     dict(model=model, max_tokens=max_tokens, request_timeout_s=request_timeout_s, seed=seed))
    return _run("overload_tier", config, duration_s, summary_path, {"tier": tier, "factor": factor,
                                                                    "rate_per_s": rate * factor})


def flash_sale(base_url: str, tiers: dict[str, Any], burst_start_s: float, burst_end_s: float,
               factor: float = 5.0, duration_s: float = 30.0, summary_path: str | None = None,
               model: str | None = None, max_tokens: int = 8, request_timeout_s: float = 30.0, seed: int = 0) -> dict:
    if not 0 <= burst_start_s < burst_end_s <= duration_s:
        raise LabError(f"need 0 <= burst_start_s < burst_end_s <= duration_s, got {burst_start_s}, {burst_end_s}, "
                       f"{duration_s}")
    try:
        loads = [TierLoad(name, key, FlashSaleArrivals(rate, factor, burst_start_s, burst_end_s))
                 for name, key, rate in parse_tiers(tiers)]
    except ValueError as error:  # FlashSaleArrivals' own checks (factor > 0, ...)
        raise LabError(f"flash sale: {error}") from None
    config = _config(base_url, loads, duration_s, dict(model=model, max_tokens=max_tokens,
                                                       request_timeout_s=request_timeout_s, seed=seed))
    return _run("flash_sale", config, duration_s, summary_path,
                {"factor": factor, "burst_start_s": burst_start_s, "burst_end_s": burst_end_s})
