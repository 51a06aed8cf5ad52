"""The steady-state hypothesis of a drill: enough requests succeed and VIP's first tokens come fast.

Contract:
- `steady_state(base_url, tiers, duration_s, ...)` (a chaostoolkit probe) sends a short sample load
  (`lab.chaos.loadgen.DrillLoad`, `tiers` as in `lab.chaos.load_faults`) and returns
  `{"sent", "success_rate", "lost", "vip_ttft_p99_ms", "tiers": {...}}`, measured at the client, and
  `"gateway": {"success_rate", "vip_ttfb_p99_ms", "counted"}`, the gateway's own metrics over the same
  window (two scrapes of its /metrics; None when `base_url` is no gateway).
- `holds(value, min_success_rate, max_vip_ttft_p99_ms=None, max_lost=0, min_requests=1)` is its
  tolerance (chaostoolkit passes the probe's result as `value`): true when at least `min_requests` were
  sent, the success rate is >= `min_success_rate`, no more than `max_lost` were lost and, when given, the
  VIP TTFT P99 is <= `max_vip_ttft_p99_ms` (a sample with no successful VIP request fails that test);
  `min_gateway_success_rate` and `max_gateway_vip_ttfb_p99_ms`, when given, hold the gateway's view to
  the same bars (a sample without the gateway's view fails them).
  In an experiment:
      "tolerance": {"type": "probe", "name": "holds", "provider": {"type": "python",
                    "module": "lab.chaos.steady_state", "func": "holds",
                    "arguments": {"min_success_rate": 0.99, "max_vip_ttft_p99_ms": 500}}}
- `steady_state_met(...)`: both in one call, a boolean for `"tolerance": true`.
- `lost_requests(summary_path)` and `drill_success_rate(summary_path, tier=None)` read the summary a drill
  load wrote (`lab.chaos.load_faults`): a file not there yet means no drill ran, so nothing was lost (0)
  and nothing failed (1.0), and the same probe serves before and after the method (give each run a
  fresh path).
The gateway's own view of the same numbers is `lab.chaos.probes` (gateway_success_rate, gateway_ttft_p99_ms).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lab.chaos.load_faults import parse_tiers
from lab.chaos.loadgen import DrillLoad, LoadConfig, TierLoad
from lab.chaos.probes import gateway_window, scrape
from lab.errors import LabError

__all__ = ["steady_state", "holds", "steady_state_met", "lost_requests", "drill_success_rate"]


def steady_state(base_url: str, tiers: dict[str, Any], duration_s: float = 3.0, vip_tier: str = "vip",
                 model: str | None = None, max_tokens: int = 8, request_timeout_s: float = 10.0, seed: int = 0) -> dict:
    if not duration_s > 0:
        raise LabError(f"duration_s must be > 0, got {duration_s}")
    loads = [TierLoad.poisson(name, key, rate) for name, key, rate in parse_tiers(tiers)]
    config = LoadConfig(base_url=base_url, tiers=tuple(loads), model=model, max_tokens=max_tokens,
                        request_timeout_s=request_timeout_s, max_duration_s=duration_s, seed=seed)
    before = _scrape_or_none(base_url)
    load = DrillLoad(config).start()
    time.sleep(duration_s)
    result = load.stop()
    after = _scrape_or_none(base_url) if before is not None else None
    summary = result.summary()
    vip = summary["tiers"].get(vip_tier, {}).get("ttft_p99_s")
    gateway = gateway_window(before, after, vip_tier) if before is not None and after is not None else None
    return {"sent": summary["sent"], "success_rate": summary["success_rate"], "lost": summary["lost"],
            "vip_ttft_p99_ms": None if vip is None else vip * 1000.0, "error_types": summary["error_types"],
            "tiers": summary["tiers"], "gateway": gateway}


def _scrape_or_none(base_url: str) -> dict | None:
    try:
        metrics = scrape(base_url)
    except LabError:
        return None
    return metrics if "lab_gateway_requests" in metrics else None  # a replica is no gateway


def holds(value: dict | None = None, min_success_rate: float = 0.99, max_vip_ttft_p99_ms: float | None = None,
          max_lost: int = 0, min_requests: int = 1, min_gateway_success_rate: float | None = None,
          max_gateway_vip_ttfb_p99_ms: float | None = None) -> bool:
    # `value` defaults to None only so that `chaos validate` accepts a tolerance that omits it (chaostoolkit
    # fills it in at run time); called without it, it is a mistake.
    if not isinstance(value, dict) or "sent" not in value:
        raise LabError(f"holds() checks the result of lab.chaos.steady_state.steady_state, got {value!r}")
    if value["sent"] < min_requests or value["lost"] > max_lost:
        return False
    if value["success_rate"] is None or value["success_rate"] < min_success_rate:
        return False
    gateway = value.get("gateway") or {}
    if min_gateway_success_rate is not None and not (gateway.get("success_rate") or 0.0) >= min_gateway_success_rate:
        return False
    if max_gateway_vip_ttfb_p99_ms is not None:
        p99 = gateway.get("vip_ttfb_p99_ms")
        if p99 is None or p99 > max_gateway_vip_ttfb_p99_ms:
            return False
    if max_vip_ttft_p99_ms is not None:
        vip = value.get("vip_ttft_p99_ms")
        return vip is not None and vip <= max_vip_ttft_p99_ms
    return True


def steady_state_met(base_url: str, tiers: dict[str, Any], min_success_rate: float = 0.99,
                     max_vip_ttft_p99_ms: float | None = None, duration_s: float = 3.0, vip_tier: str = "vip",
                     model: str | None = None, max_tokens: int = 8, request_timeout_s: float = 10.0) -> bool:
    value = steady_state(base_url, tiers, duration_s, vip_tier, model, max_tokens, request_timeout_s)
    return holds(value, min_success_rate, max_vip_ttft_p99_ms)


def _read_summary(summary_path: str) -> dict | None:
    path = Path(summary_path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["summary"]
    except (ValueError, KeyError, TypeError) as error:  # not JSON, or JSON of another shape
        raise LabError(f"{summary_path} is not a drill summary ({type(error).__name__}: {error})") from None


def lost_requests(summary_path: str) -> int:
    """Probe: requests the drill lost (0 when no drill has written `summary_path` yet)."""
    summary = _read_summary(summary_path)
    return 0 if summary is None else int(summary["lost"])


def drill_success_rate(summary_path: str, tier: str | None = None) -> float:
    """Probe: the drill's success rate, overall or for `tier` (1.0 when no drill has run yet)."""
    summary = _read_summary(summary_path)
    if summary is None:
        return 1.0
    rate = summary["success_rate"] if tier is None else summary["tiers"].get(tier, {}).get("success_rate")
    if rate is None:
        raise LabError(f"the drill in {summary_path} sent no request{'' if tier is None else f' of tier {tier!r}'}")
    return float(rate)

