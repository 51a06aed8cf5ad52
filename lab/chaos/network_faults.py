"""The network faults between a gateway and one replica, as typed, validated records.

Contract: four kinds, the same for both backends (`lab.chaos.fault_proxy`, `lab.chaos.netns_faults`):
- `Latency(latency_ms, jitter_ms, direction)`: every chunk (proxy) or packet (netem) waits
  latency_ms +- jitter_ms (uniform, at least 0) in each direction it applies to ("to_target",
  "from_target" or "both"; with both, a request-response round trip gains about 2 x latency_ms).
- `Loss(connection_fraction, chunk_fraction, chunk_stall_ms, direction)`: TCP never loses bytes, it
  retransmits, so loss shows up as stalls. That fraction of new connections is held (not connected
  upstream) while the fault lasts (the netns backend drops that fraction of SYNs); that fraction of
  chunks is held back `chunk_stall_ms` first (a retransmission timeout; the netns backend drops that
  fraction of packets and lets TCP retransmit them).
- `Reset(new_connection_fraction, established, after_bytes)`: RST that fraction of new connections;
  with `established`, RST every connection open when the fault is set (once); with `after_bytes`, cut
  each connection (RST both ways) once that many bytes have come back from the target (mid-stream).
- `Partition(mode)`: "blackhole" accepts (or holds) and passes nothing until cleared, as a DROP rule
  does (TCP then delivers what waited); "refuse" stops listening and RSTs open connections, as a
  REJECT rule or a dead host's port does.
`parse_fault(kind, fields)` builds one from JSON (the control API, chaostoolkit arguments); a wrong
kind, an unknown field, a wrong type or an out-of-range value is a `LabError` naming it.
`describe()` gives the JSON-able settings, with `kind`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from lab.errors import LabError

DIRECTIONS = ("both", "to_target", "from_target")
PARTITION_MODES = ("blackhole", "refuse")


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise LabError(f"{name} must be a fraction in [0, 1], got {value}")


def _non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise LabError(f"{name} must be a finite number >= 0, got {value}")


def _direction(value: str) -> None:
    if value not in DIRECTIONS:
        raise LabError(f"direction must be one of {', '.join(DIRECTIONS)}, got {value!r}")


@dataclass(frozen=True)
class Latency:
    kind: ClassVar[str] = "latency"
    latency_ms: float
    jitter_ms: float = 0.0
    direction: str = "both"

    def __post_init__(self) -> None:
        _non_negative("latency_ms", self.latency_ms)
        _non_negative("jitter_ms", self.jitter_ms)
        _direction(self.direction)

    def applies(self, direction: str) -> bool:
        return self.direction in ("both", direction)


@dataclass(frozen=True)
class Loss:
    kind: ClassVar[str] = "loss"
    connection_fraction: float = 0.0
    chunk_fraction: float = 0.0
    chunk_stall_ms: float = 200.0  # Linux's minimum retransmission timeout
    direction: str = "both"

    def __post_init__(self) -> None:
        _fraction("connection_fraction", self.connection_fraction)
        _fraction("chunk_fraction", self.chunk_fraction)
        _non_negative("chunk_stall_ms", self.chunk_stall_ms)
        _direction(self.direction)
        if self.connection_fraction == 0 and self.chunk_fraction == 0:
            raise LabError("a loss fault needs connection_fraction or chunk_fraction > 0")

    def applies(self, direction: str) -> bool:
        return self.direction in ("both", direction)


@dataclass(frozen=True)
class Reset:
    kind: ClassVar[str] = "reset"
    new_connection_fraction: float = 0.0
    established: bool = False
    after_bytes: int | None = None

    def __post_init__(self) -> None:
        _fraction("new_connection_fraction", self.new_connection_fraction)
        if self.after_bytes is not None and self.after_bytes < 1:
            raise LabError(f"after_bytes must be >= 1 (or null), got {self.after_bytes}")
        if self.new_connection_fraction == 0 and not self.established and self.after_bytes is None:
            raise LabError("a reset fault needs new_connection_fraction > 0, established: true or after_bytes")


@dataclass(frozen=True)
class Partition:
    kind: ClassVar[str] = "partition"
    mode: str = "blackhole"

    def __post_init__(self) -> None:
        if self.mode not in PARTITION_MODES:
            raise LabError(f"partition mode must be one of {', '.join(PARTITION_MODES)}, got {self.mode!r}")


Fault = Latency | Loss | Reset | Partition
FAULT_KINDS: dict[str, type] = {cls.kind: cls for cls in (Latency, Loss, Reset, Partition)}


def _check_type(kind: str, field: dataclasses.Field, value: Any) -> Any:
    expected = str(field.type)
    if "bool" in expected:
        if not isinstance(value, bool):
            raise LabError(f"{kind}.{field.name} must be true or false, got {value!r}")
        return value
    if "str" in expected:
        if not isinstance(value, str):
            raise LabError(f"{kind}.{field.name} must be a string, got {value!r}")
        return value
    if value is None and "None" in expected:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabError(f"{kind}.{field.name} must be a number, got {value!r}")
    if "int" in expected and "float" not in expected:
        if value != int(value):
            raise LabError(f"{kind}.{field.name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def parse_fault(kind: str, fields: dict[str, Any] | None) -> Fault:
    """One fault from its kind and JSON fields (see the module docstring)."""
    cls = FAULT_KINDS.get(kind)
    if cls is None:
        raise LabError(f"unknown fault kind {kind!r}; the kinds are {', '.join(FAULT_KINDS)}")
    fields = fields or {}
    if not isinstance(fields, dict):
        raise LabError(f"{kind}: expected a JSON object of fields, got {type(fields).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise LabError(f"{kind}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(known)}")
    values = {name: _check_type(kind, known[name], value) for name, value in fields.items()}
    missing = [f.name for f in known.values() if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise LabError(f"{kind}: missing field(s) {', '.join(missing)}")
    return cls(**values)


def describe(fault: Fault) -> dict[str, Any]:
    return {"kind": fault.kind, **dataclasses.asdict(fault)}
