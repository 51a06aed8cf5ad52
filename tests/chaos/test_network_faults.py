"""The network fault records: JSON in, a typed fault out, and every bad input named."""

from __future__ import annotations

import pytest

from lab.chaos.network_faults import Latency, Loss, Partition, Reset, describe, parse_fault
from lab.errors import LabError


def test_a_latency_fault_is_built_from_its_json_fields() -> None:
    assert parse_fault("latency", {"latency_ms": 20, "jitter_ms": 5}) == Latency(20.0, 5.0, "both")


def test_describe_round_trips_through_parse() -> None:
    fault = Reset(new_connection_fraction=0.25, after_bytes=100)
    fields = {k: v for k, v in describe(fault).items() if k != "kind"}
    assert parse_fault(describe(fault)["kind"], fields) == fault


@pytest.mark.parametrize(("kind", "fields", "named"), [
    ("jitter", {}, "unknown fault kind 'jitter'"),
    ("latency", {"latency": 5}, "unknown field(s) latency"),
    ("latency", {}, "missing field(s) latency_ms"),
    ("latency", {"latency_ms": "fast"}, "latency.latency_ms must be a number"),
    ("latency", {"latency_ms": -1}, "latency_ms must be a finite number >= 0"),
    ("latency", {"latency_ms": 1, "direction": "sideways"}, "direction must be one of"),
    ("loss", {}, "needs connection_fraction or chunk_fraction > 0"),
    ("loss", {"chunk_fraction": 1.5}, "chunk_fraction must be a fraction in [0, 1]"),
    ("reset", {}, "needs new_connection_fraction > 0, established: true or after_bytes"),
    ("reset", {"after_bytes": 2.5}, "reset.after_bytes must be a whole number"),
    ("reset", {"established": "yes"}, "reset.established must be true or false"),
    ("partition", {"mode": "drop"}, "partition mode must be one of blackhole, refuse"),
])
def test_bad_input_is_an_error_that_names_the_problem(kind: str, fields: dict, named: str) -> None:
    with pytest.raises(LabError, match=named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_fault(kind, fields)


def test_a_fault_applies_only_in_its_direction() -> None:
    fault = Loss(chunk_fraction=0.5, direction="from_target")
    assert (fault.applies("from_target"), fault.applies("to_target")) == (True, False)


def test_partition_defaults_to_a_blackhole() -> None:
    assert parse_fault("partition", None) == Partition("blackhole")
