"""Lazy re-exports for the study packages: a notebook imports one study, `lab --help` imports none.

`lazy_exports(package, {"name": "module", ...})` returns the `__getattr__` and `__dir__` a study's
`__init__` assigns (PEP 562): `from lab.studies import roofline; roofline.run_preset(...)` imports
`lab.studies.roofline.suite` (and torch) only when the name is first used, so the study's command-line
module (`lab.studies.roofline.cli`, loaded by `lab --help`) stays cheap.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    names = sorted(table)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
