"""DrillResult's numbers on hand-made timelines whose answers are computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lab.chaos.drill_client import DrillRequest
from lab.chaos.drill_report import DrillResult
from lab.chaos.records import Instant


def req(i: int, sent: float, outcome: str = "success", tier: str = "vip", ttft: float | None = 0.1) -> DrillRequest:
    first = sent + ttft if outcome == "success" and ttft is not None else None
    return DrillRequest(i, tier, sent, sent + 0.5, outcome, first, first, 200 if first else None,
                        None if outcome == "success" else f"{outcome}_type")


def result(rows: list[DrillRequest]) -> DrillResult:
    return DrillResult(rows=tuple(rows), started=Instant(0.0, 0.0), stopped=Instant(100.0, 100.0),
                       tiers=("vip", "batch"))


def test_success_rate_is_per_tier_over_requests_sent() -> None:
    r = result([req(0, 1), req(1, 2, "error"), req(2, 3, tier="batch"), req(3, 4, "timeout", tier="batch"),
                req(4, 5, tier="batch"), req(5, 6, "connection_error", tier="batch")])
    assert (r.success_rate("vip"), r.success_rate("batch"), r.success_rate()) == (0.5, 0.5, 0.5)


def test_a_tier_that_sent_nothing_has_no_success_rate() -> None:
    assert math.isnan(result([req(0, 1)]).success_rate("batch"))


def test_ttft_p99_uses_successes_only_with_linear_interpolation() -> None:
    rows = [req(i, i, ttft=(i + 1) / 100) for i in range(100)] + [req(100, 100, "timeout")]
    # 100 values 0.01..1.00: rank 0.99 * (100 - 1) = 98.01, 1% of the way from 0.99 (index 98) to 1.00
    assert math.isclose(result(rows).ttft_p99_s("vip"), 0.9901, rel_tol=1e-9)


def test_one_lost_request_fails_the_drill() -> None:
    passing, failing = result([req(0, 1), req(1, 2, "error")]), result([req(0, 1), req(1, 2, "lost")])
    assert (passing.passed, failing.passed, failing.lost) == (True, False, 1)


def test_detect_is_the_last_bad_request_sent_during_the_fault() -> None:
    # fault 10..20: bad at 11 and 13, then good from 14 on -> routed around 3 s after the start
    rows = [req(0, 9), req(1, 11, "timeout"), req(2, 13, "error"), req(3, 14), req(4, 19), req(5, 21)]
    view = result(rows).client_view(10.0, 20.0)
    assert (view.requests_during, view.bad_during, view.time_to_detect_s) == (4, 2, 3.0)


def test_a_fault_never_routed_around_has_no_detect_time() -> None:
    rows = [req(0, 11), req(1, 15, "timeout"), req(2, 19, "timeout"), req(3, 21)]
    assert result(rows).client_view(10.0, 20.0).time_to_detect_s is None


def test_recover_is_the_last_bad_request_after_the_fault_ends() -> None:
    rows = [req(0, 15), req(1, 20.5, "error"), req(2, 22, "timeout"), req(3, 23), req(4, 30)]
    view = result(rows).client_view(10.0, 20.0)
    assert (view.bad_after, view.time_to_recover_s, view.time_to_detect_s) == (2, 2.0, 0.0)


def test_a_drill_that_ends_bad_has_not_recovered() -> None:
    rows = [req(0, 15), req(1, 25, "error")]
    assert result(rows).client_view(10.0, 20.0).time_to_recover_s is None


def test_a_slow_first_token_counts_as_bad_with_a_budget() -> None:
    rows = [req(0, 12, ttft=0.9), req(1, 14, ttft=0.1), req(2, 18, ttft=0.1)]
    assert result(rows).client_view(10.0, 20.0).time_to_detect_s == 0.0
    assert result(rows).client_view(10.0, 20.0, ttft_budget_s=0.5).time_to_detect_s == 2.0


def test_the_saved_file_is_strict_json_with_every_row(tmp_path: Path) -> None:
    r = result([req(0, 1), req(1, 2, "lost", tier="batch")])
    payload = json.loads(r.save(tmp_path / "drill.json").read_text())  # strict: NaN would not load back as null
    assert payload["summary"]["tiers"]["batch"]["ttft_p99_s"] is None
    assert [row["outcome"] for row in payload["timeline"]] == ["success", "lost"]
    assert payload["summary"]["passed"] is False
