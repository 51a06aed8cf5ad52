"""Reads one mapping of the service YAML, naming the field of every mistake (`replicas[1].count: ...`).

Contract: `Fields(data, path)` wraps a mapping (None reads as empty); `get(name, kinds, default)` returns a
value of one of `kinds` (an int is accepted where a float is asked), or `default` when the field is
missing, or raises `LabError` naming the field when it is missing without a default or has the wrong
type; `positive(...)` also requires > 0. `done()` raises on any field that was never asked for, so a typo
never falls back to a default silently. Messages start with "service config: " and the field's path.
"""

from __future__ import annotations

from typing import Any

from lab.errors import LabError

REQUIRED: Any = object()  # the default of a field that must be given


def fail(path: str, message: str) -> LabError:
    return LabError(f"service config: {path or 'top level'}: {message}")


class Fields:
    def __init__(self, data: Any, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise fail(path, f"expected a mapping, got {type(data).__name__} {data!r}")
        self.data, self.path, self.seen = data, path, set()

    def name(self, field: str) -> str:
        return f"{self.path}.{field}" if self.path else field

    def has(self, field: str) -> bool:
        return field in self.data

    def get(self, field: str, kinds: type | tuple[type, ...], default: Any = REQUIRED) -> Any:
        self.seen.add(field)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if field not in self.data:
            if default is REQUIRED:
                raise fail(self.name(field), "required field is missing")
            return default
        value = self.data[field]
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is an int in Python; a YAML `true` is never a count or a number here.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise fail(self.name(field), f"expected {expected}, got {value!r}")
        return value

    def positive(self, field: str, kind: type, default: Any = REQUIRED) -> Any:
        value = self.get(field, kind, default)
        if value is not None and value <= 0:
            raise fail(self.name(field), f"expected a positive number, got {value!r}")
        return value

    def sub(self, field: str) -> Fields:
        self.seen.add(field)
        return Fields(self.data.get(field), self.name(field))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen, key=str)
        if unknown:
            raise fail(self.name(str(unknown[0])), f"unknown field; known: {sorted(self.seen)}")
