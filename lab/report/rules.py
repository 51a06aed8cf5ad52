"""When a measured number meets one of the article's claims: one typed rule per claim.

Contract: a rule's `judge(value, baseline)` returns a `Judgement` (a `Status` plus the evidence, e.g. the
measured ratio) and `describe(unit)` says the rule in words for the report's "met when" column.
- `AtMost(limit)` / `AtLeast(limit)`: the measured value against the article's bound ("<= 500 ms" is met
  by 480 ms); savings are signed changes, so "-35 %" is `AtMost(-35)`: met by a change of -52 %.
- `Within(target, tolerance)`: a share that must come out as set (the canary's 1 % of traffic).
- `RatioAtLeast(before, after)`: a "before -> after" claim is met when our own before/after ratio, measured
  in one run on one card, is at least the article's (480 -> 2100 QPS: ours must improve by >= 4.38×).
  Absolute values cannot be compared: the article's come from 16 A100s, ours from one card.
- `Problem(size)`: the failures the article reports for its native deployment (+370 % latency, 12 %
  errors, 45 s cold start, ...) are not targets; "met" would mean nothing. Our plain path is measured
  under the same condition and the problem is `reproduced` when it is at least as large here, `milder
  here` when smaller, `not seen` when absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from lab.report.formatting import format_number, format_value


class Status(Enum):
    MET = "met"
    NOT_MET = "not met"
    REPRODUCED = "reproduced"
    MILDER = "milder here"
    NOT_SEEN = "not seen"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Judgement:
    status: Status
    evidence: str = ""  # what decided it beyond the value itself, e.g. "ratio 616×"


class Rule(Protocol):
    def judge(self, value: float, baseline: float | None) -> Judgement: ...

    def describe(self, unit: str) -> str: ...


def _met(ok: bool) -> Status:
    return Status.MET if ok else Status.NOT_MET


@dataclass(frozen=True)
class AtMost:
    limit: float
    strict: bool = False  # "< 10 ms" rather than "<= 10 ms"

    def judge(self, value: float, baseline: float | None) -> Judgement:
        return Judgement(_met(value < self.limit if self.strict else value <= self.limit))

    def describe(self, unit: str) -> str:
        return f"measured {'<' if self.strict else '<='} {format_value(self.limit, unit)}"


@dataclass(frozen=True)
class AtLeast:
    limit: float

    def judge(self, value: float, baseline: float | None) -> Judgement:
        return Judgement(_met(value >= self.limit))

    def describe(self, unit: str) -> str:
        return f"measured >= {format_value(self.limit, unit)}"


@dataclass(frozen=True)
class Within:
    target: float
    tolerance: float

    def judge(self, value: float, baseline: float | None) -> Judgement:
        return Judgement(_met(abs(value - self.target) <= self.tolerance))

    def describe(self, unit: str) -> str:
        return f"measured within {format_number(self.target)} ± {format_value(self.tolerance, unit)}"


@dataclass(frozen=True)
class RatioAtLeast:
    before: float  # the article's numbers
    after: float
    lower_is_better: bool = False  # latencies: the improvement is before / after

    def _ratio(self, before: float, after: float) -> float:
        return before / after if self.lower_is_better else after / before

    def judge(self, value: float, baseline: float | None) -> Judgement:
        if baseline is None or baseline <= 0 or value <= 0:
            return Judgement(Status.NOT_MEASURED, "no plain-path value in the same run")
        ratio = self._ratio(baseline, value)
        return Judgement(_met(ratio >= self._ratio(self.before, self.after)), f"ratio {format_number(ratio)}×")

    def describe(self, unit: str) -> str:
        article = f"{format_number(self.before)} -> {format_number(self.after)}"
        return f"our ratio >= {format_number(self._ratio(self.before, self.after))}× ({article})"


@dataclass(frozen=True)
class Problem:
    size: float  # as large as the article reports it

    def judge(self, value: float, baseline: float | None) -> Judgement:
        if value <= 0:
            return Judgement(Status.NOT_SEEN)
        return Judgement(Status.REPRODUCED if value >= self.size else Status.MILDER)

    def describe(self, unit: str) -> str:
        return f"a problem, not a target: reproduced when >= {format_value(self.size, unit)}"
