"""Turn a profile plus command-line choices into a validated plan, before anything runs.

Contract: `plan_profile(profile, only, overrides)` selects notebooks (`only`: names from the
profile, all when empty), merges each notebook's profile parameters with the command-line
`overrides`, and checks every name against the notebook's own `parameters` cell (papermill's
`inspect_notebook`) and, where the cell declares `int`/`float`/`bool`/`str`, the value's type.
Mistakes raise `LabError` naming the valid choices (with each parameter's type and comment).
An override applies to every selected notebook that declares it; one declared by none is an
error. `parse_overrides(["KEY=VALUE", ...])` reads values as YAML literals (1, 0.5, true, text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from lab.errors import LabError
from lab.reproduce.profile import NotebookSpec, Profile


@dataclass(frozen=True)
class DeclaredParameter:
    name: str
    type_name: str | None  # from the annotation, e.g. "float"; None when not annotated
    default: str
    help: str


@dataclass(frozen=True)
class NotebookRun:
    spec: NotebookSpec
    parameters: Mapping[str, Any]  # the final values papermill injects


@dataclass(frozen=True)
class Plan:
    profile: Profile
    runs: tuple[NotebookRun, ...]
    overrides: Mapping[str, Any]


# PyYAML follows YAML 1.1, where "1e3" is a string; on a command line it means a float.
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_value(text: str) -> Any:
    if not text.strip():
        return ""
    if _SCIENTIFIC.match(text.strip()):
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not a YAML literal: keep the text as a string


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise LabError(f"-p expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(text)
    return overrides


def declared_parameters(spec: NotebookSpec) -> dict[str, DeclaredParameter]:
    import papermill

    found = papermill.inspect_notebook(str(spec.path))
    return {
        name: DeclaredParameter(
            name=name,
            type_name=None if info.get("inferred_type_name") in (None, "None") else info["inferred_type_name"],
            default=str(info.get("default")),
            help=str(info.get("help") or ""),
        )
        for name, info in found.items()
    }


def describe(declared: Mapping[str, DeclaredParameter]) -> str:
    if not declared:
        return "(this notebook has no parameters cell)"
    return "; ".join(
        f"{p.name}: {p.type_name or 'any'} = {p.default}" + (f" ({p.help})" if p.help else "")
        for p in declared.values()
    )


_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def _check(spec: NotebookSpec, values: Mapping[str, Any], declared: Mapping[str, DeclaredParameter],
           origin: str) -> None:
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise LabError(
            f"notebook {spec.name!r} has no parameter {', '.join(unknown)} ({origin}); "
            f"valid parameters: {describe(declared)}"
        )
    for name, value in values.items():
        type_name = declared[name].type_name
        check = _TYPE_CHECKS.get(type_name or "")
        if check is not None and not check(value):
            raise LabError(
                f"notebook {spec.name!r}: parameter {name} is declared {type_name}, "
                f"got {type(value).__name__} {value!r} ({origin})"
            )


def plan_profile(profile: Profile, only: Sequence[str] = (), overrides: Mapping[str, Any] | None = None) -> Plan:
    overrides = dict(overrides or {})
    unknown = [name for name in only if name not in profile.notebook_names]
    if unknown:
        raise LabError(
            f"profile {profile.name!r} has no notebook {', '.join(unknown)}; "
            f"valid notebooks: {', '.join(profile.notebook_names)}"
        )
    selected = [spec for spec in profile.notebooks if not only or spec.name in only]
    declared = {spec.name: declared_parameters(spec) for spec in selected}
    for spec in selected:
        _check(spec, spec.parameters, declared[spec.name], f"in {profile.source.name}")
    unused = sorted(k for k in overrides if not any(k in declared[s.name] for s in selected))
    if unused:
        valid = " | ".join(f"{s.name}: {describe(declared[s.name])}" for s in selected)
        raise LabError(f"no selected notebook has parameter {', '.join(unused)} (-p); valid parameters: {valid}")
    runs = []
    for spec in selected:
        mine = {k: v for k, v in overrides.items() if k in declared[spec.name]}
        _check(spec, mine, declared[spec.name], "from -p")
        runs.append(NotebookRun(spec=spec, parameters={**spec.parameters, **mine}))
    return Plan(profile=profile, runs=tuple(runs), overrides=overrides)
