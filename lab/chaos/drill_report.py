"""What a drill's load saw: counts by outcome, success rate per tier, TTFT P99, and the fault's cost.

Contract: `DrillResult(rows, started, stopped, skipped, params, tiers)` holds every `DrillRequest` of a
`DrillLoad`. `lost` counts requests with neither an answer nor an explicit error, `cut` the 200 streams the
transport broke; `passed` is the ledger alone: `lost == 0 and cut == 0` (a drill whose fault kills the
gateway forgives the cuts: `lab.studies.chaos.metrics`). `success_rate(tier)` is successes over
requests sent (NaN when none was sent); `ttft_p99_s(tier)` uses the successful requests only
(`lab.bench.metrics.LatencyStats`: numpy's linear interpolation). `client_view(fault_start_s,
fault_end_s)` answers, from the client's side and on the `time.monotonic()` clock of the fault records:
- time to detect: from the fault's start to the last request *sent during the fault* that went bad (not
  a success, or a TTFT over `ttft_budget_s`) when the requests after it in the fault all went well: the
  time the service needed to route around the fault. 0 when nothing went bad; None when the fault
  window ends with a bad request (never routed around) or saw no request.
- time to recover: from the fault's end to the last bad request sent after it; 0 when none; None when
  the drill's last request was bad (not recovered while the drill ran).
`summary()` is the JSON-able record part (NaN written as None), `timeline()` one dict per request for
pandas and plots, `save(path)` both in one JSON file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.bench.metrics import LatencyStats
from lab.chaos.drill_client import OUTCOMES, DrillRequest
from lab.chaos.records import Instant


@dataclass(frozen=True)
class ClientView:
    fault_start_s: float
    fault_end_s: float
    requests_during: int
    bad_during: int
    time_to_detect_s: float | None
    requests_after: int
    bad_after: int
    time_to_recover_s: float | None


@dataclass(frozen=True)
class DrillResult:
    rows: tuple[DrillRequest, ...]
    started: Instant
    stopped: Instant
    skipped: dict[str, int] = field(default_factory=dict)  # per tier: not sent, the client's in-flight cap
    params: dict = field(default_factory=dict)
    tiers: tuple[str, ...] = ()

    def of(self, tier: str | None) -> list[DrillRequest]:
        return [r for r in self.rows if tier is None or r.tier == tier]

    def counts(self, tier: str | None = None) -> dict[str, int]:
        counted = Counter(r.outcome for r in self.of(tier))
        return {outcome: counted.get(outcome, 0) for outcome in OUTCOMES}

    def error_types(self, tier: str | None = None) -> dict[str, int]:
        return dict(Counter(r.error_type for r in self.of(tier) if r.error_type is not None).most_common())

    @property
    def lost(self) -> int:
        return self.counts()["lost"]

    @property
    def cut(self) -> int:
        return self.counts()["cut"]

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.cut == 0

    def success_rate(self, tier: str | None = None) -> float:
        rows = self.of(tier)
        return sum(r.outcome == "success" for r in rows) / len(rows) if rows else math.nan

    def ttft_p99_s(self, tier: str | None = None) -> float:
        # lab.bench's definition (numpy's linear interpolation; NaN when nothing succeeded).
        ttfts = [r.ttft_s for r in self.of(tier) if r.outcome == "success" and r.ttft_s is not None]
        return LatencyStats.of(ttfts).p99_s

    def client_view(self, fault_start_s: float, fault_end_s: float, *, tier: str | None = None,
                    ttft_budget_s: float | None = None) -> ClientView:
        def bad(r: DrillRequest) -> bool:
            slow = ttft_budget_s is not None and (r.ttft_s is None or r.ttft_s > ttft_budget_s)
            return r.outcome != "success" or slow

        rows = sorted(self.of(tier), key=lambda r: r.sent_at_s)
        during = [r for r in rows if fault_start_s <= r.sent_at_s < fault_end_s]
        after = [r for r in rows if r.sent_at_s >= fault_end_s]
        bad_during, bad_after = [r for r in during if bad(r)], [r for r in after if bad(r)]
        if not during or (bad_during and during[-1] is bad_during[-1]):
            detect = None  # no request saw the fault, or the service never routed around it
        else:
            detect = bad_during[-1].sent_at_s - fault_start_s if bad_during else 0.0
        if after and bad_after and after[-1] is bad_after[-1]:
            recover = None
        else:
            recover = bad_after[-1].sent_at_s - fault_end_s if bad_after else 0.0
        return ClientView(fault_start_s, fault_end_s, len(during), len(bad_during), detect, len(after),
                          len(bad_after), recover)

    def summary(self) -> dict:
        tiers = self.tiers or tuple(sorted({r.tier for r in self.rows}))
        per_tier = {t: {"sent": len(self.of(t)), **self.counts(t), "success_rate": self.success_rate(t),
                        "ttft_p99_s": self.ttft_p99_s(t), "skipped": self.skipped.get(t, 0)} for t in tiers}
        summary = {"sent": len(self.rows), **self.counts(), "passed": self.passed,
                   "success_rate": self.success_rate(), "error_types": self.error_types(), "tiers": per_tier,
                   "started_monotonic_s": self.started.monotonic_s, "started_wall_s": self.started.wall_s,
                   "stopped_monotonic_s": self.stopped.monotonic_s, "params": self.params}
        return _nan_to_none(summary)  # strict JSON (chaostoolkit's journal, MLflow): NaN becomes null

    def timeline(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    def save(self, path: str | Path) -> Path:
        """The summary and the timeline as one JSON file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"summary": self.summary(), "timeline": self.timeline()}  # timeline: no NaN, None already
        path.write_text(json.dumps(payload, indent=1, allow_nan=False), encoding="utf-8")
        return path


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def client_view_dict(view: ClientView) -> dict:
    return asdict(view)
