"""Trace parsing, clear errors for malformed CSVs, time scaling, max duration and clipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.bench.traces import TraceFormatError, read_trace
from lab.bench.workloads import RequestShape, TraceWorkload
from lab.paths import default_trace_path

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_azure_timestamps_with_seven_fraction_digits(tmp_path):
    trace = read_trace(write(tmp_path, AZURE_HEADER
                             + "2023-11-16 18:15:46.6805900,374,44\n"
                             + "2023-11-16 18:15:50.9951690,396,109\n"
                             + "2023-11-16 18:16:46.6805900,10,1\n"))
    assert [r.arrival_s for r in trace.rows] == pytest.approx([0.0, 4.314579, 60.0])
    assert (trace.rows[1].context_tokens, trace.rows[1].generated_tokens) == (396, 109)
    assert trace.duration_s == pytest.approx(60.0)


def test_rows_are_sorted_and_extra_columns_ignored(tmp_path):
    trace = read_trace(write(tmp_path, "Extra,TIMESTAMP,ContextTokens,GeneratedTokens\nx,5.0,3,4\ny,2.0,1,2\n"))
    assert [(r.arrival_s, r.context_tokens) for r in trace.rows] == [(0.0, 1), (3.0, 3)]


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        ("1.0,5,6\nnot-a-time,5,6\n", 3, "TIMESTAMP"),
        ("1.0,5,6\n2.0,five,6\n", 3, "ContextTokens"),
        ("1.0,5,-6\n", 2, "GeneratedTokens"),
        ("1.0,5,6\n2.0,5,6\n3.0,5\n", 4, "GeneratedTokens"),
    ],
)
def test_malformed_value_names_line_and_column(tmp_path, body, line, column):
    with pytest.raises(TraceFormatError, match=rf"line {line}, column {column}"):
        read_trace(write(tmp_path, AZURE_HEADER + body))


def test_missing_column_is_named(tmp_path):
    with pytest.raises(TraceFormatError, match="missing column.*GeneratedTokens"):
        read_trace(write(tmp_path, "TIMESTAMP,ContextTokens\n1.0,5\n"))


def test_empty_or_absent_trace(tmp_path):
    with pytest.raises(TraceFormatError, match="no requests"):
        read_trace(write(tmp_path, AZURE_HEADER))
    with pytest.raises(TraceFormatError, match="not found"):
        read_trace(tmp_path / "nope.csv")


def test_replay_speedup_and_max_duration(tmp_path):
    trace = read_trace(write(tmp_path, AZURE_HEADER + "".join(f"{t},10,5\n" for t in (0, 10, 20, 30, 40))))
    fast = trace.replay(speedup=2.0, max_duration_s=15.0)
    assert [r.arrival_s for r in fast.rows] == [0.0, 5.0, 10.0]  # 15.0 is not before 15 s
    assert trace.replay(speedup=0.5).duration_s == 80.0


def test_trace_workload_clips_to_max_context(tmp_path):
    path = write(tmp_path, AZURE_HEADER + "0,3000,600\n1,100,50\n2,10,5000\n")
    workload = TraceWorkload(path, max_context_tokens=1024, max_requests=3)
    assert workload.shapes() == (RequestShape(424, 600), RequestShape(100, 50), RequestShape(1, 1023))
    assert workload.default_arrivals().arrivals_s == (0.0, 1.0, 2.0)


def test_default_trace_is_found_relative_to_the_project_root():
    path = default_trace_path()
    assert path.parts[-3:] == ("data", "traces", "azure_llm_2023_conv.csv") and path.is_file()
    trace = read_trace(path).replay(max_duration_s=60.0)
    assert 100 < len(trace.rows) < 1000  # about 5.5 requests/s in the hour
