"""Request traces: CSV files with TIMESTAMP, ContextTokens, GeneratedTokens (the Azure LLM traces).

Contract:
- `read_trace(path)` parses a CSV with at least the columns `TIMESTAMP` (ISO date-time such as
  `2023-11-16 18:15:46.6805900`, or plain seconds), `ContextTokens` and `GeneratedTokens`
  (integers >= 0) and returns a `Trace` whose rows are sorted by time, with `arrival_s` measured
  from the first request. Any malformed value raises `TraceFormatError` naming the file, the line
  number (1-based, the header is line 1) and the column; a missing column names what is missing.
- `Trace.replay(speedup, max_duration_s)` rescales time (`speedup` 2.0 replays twice as fast) and
  keeps the requests that arrive before `max_duration_s` of replay time.
- Without a path, callers use `lab.paths.default_trace_path()`: the Azure 2023 conversation trace shipped in the
  repository under `data/traces/`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

TIMESTAMP = "TIMESTAMP"
CONTEXT_TOKENS = "ContextTokens"
GENERATED_TOKENS = "GeneratedTokens"
REQUIRED_COLUMNS = (TIMESTAMP, CONTEXT_TOKENS, GENERATED_TOKENS)


class TraceFormatError(LabError):
    """A trace file that cannot be read; the message names the line and the column."""


@dataclass(frozen=True)
class TraceRow:
    arrival_s: float  # seconds since the trace's first request
    context_tokens: int
    generated_tokens: int


@dataclass(frozen=True)
class Trace:
    source: str
    rows: tuple[TraceRow, ...]

    @property
    def duration_s(self) -> float:
        return self.rows[-1].arrival_s if self.rows else 0.0

    @property
    def mean_rate_per_s(self) -> float:
        return (len(self.rows) - 1) / self.duration_s if self.duration_s > 0 else math.inf

    def replay(self, speedup: float = 1.0, max_duration_s: float | None = None) -> Trace:
        """Time divided by `speedup`; only requests arriving before `max_duration_s` (replay time)."""
        if not speedup > 0 or not math.isfinite(speedup):
            raise LabError(f"trace speedup must be a finite number > 0, got {speedup}")
        if max_duration_s is not None and max_duration_s <= 0:
            raise LabError(f"trace max duration must be > 0 seconds, got {max_duration_s}")
        rows = []
        for row in self.rows:
            arrival_s = row.arrival_s / speedup
            if max_duration_s is not None and arrival_s >= max_duration_s:
                break  # rows are sorted by time
            rows.append(TraceRow(arrival_s, row.context_tokens, row.generated_tokens))
        return Trace(self.source, tuple(rows))


def _parse_time_s(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    # Python's fromisoformat accepts at most 6 fractional digits; Azure writes 7 (100 ns ticks).
    head, dot, fraction = text.strip().partition(".")
    stamp = _dt.datetime.fromisoformat(head + (dot + fraction[:6] if dot else ""))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp.timestamp()


def _parse_tokens(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError("negative")
    return value


def read_trace(path: str | Path) -> Trace:
    """Parse a trace CSV (see module docstring)."""
    trace_path = Path(path)
    if not trace_path.is_file():
        raise TraceFormatError(f"trace file not found: {trace_path}")
    parsed: list[tuple[float, int, int]] = []
    with trace_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise TraceFormatError(
                f"{trace_path}: line 1: missing column(s) {', '.join(missing)} "
                f"(a trace needs {', '.join(REQUIRED_COLUMNS)}; found {', '.join(header) or 'no header'})"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            values = []
            for column, parse, expected in (
                (TIMESTAMP, _parse_time_s, "a date-time or seconds"),
                (CONTEXT_TOKENS, _parse_tokens, "an integer >= 0"),
                (GENERATED_TOKENS, _parse_tokens, "an integer >= 0"),
            ):
                text = row.get(column)
                try:
                    if text is None:
                        raise ValueError("missing")
                    values.append(parse(text))
                except ValueError:
                    raise TraceFormatError(
                        f"{trace_path}: line {line}, column {column}: expected {expected}, got {text!r}"
                    ) from None
            parsed.append((values[0], values[1], values[2]))
    if not parsed:
        raise TraceFormatError(f"{trace_path}: the trace has no requests")
    parsed.sort(key=lambda item: item[0])
    t0 = parsed[0][0]
    return Trace(str(trace_path), tuple(TraceRow(t - t0, ctx, gen) for t, ctx, gen in parsed))
