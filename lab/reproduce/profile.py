"""Profiles: which notebooks run with which parameters (`experiments/<profile>.yaml`).

Schema (one entry per notebook; adding a notebook to a profile is one entry):

    description: what this profile is for
    notebooks:
      00_quickstart:                    # runs notebooks/00_quickstart.ipynb
        parameters: {MATMUL_SIZE: 128}  # overrides of its `parameters` cell (may be empty)
        expect_metrics: [matmul_gflops] # metrics its record must contain (optional)
        timeout_s: 600                  # per-cell timeout (optional, default: none)

Notebooks run in the order listed. Contract: `load_profile` returns a frozen `Profile` or raises
`LabError` naming the valid choices (profiles in the folder, keys of the schema, notebooks that
exist). Parameter names are checked against the notebooks later, in `lab.reproduce.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.errors import LabError

PROFILE_KEYS = {"description", "notebooks"}
NOTEBOOK_KEYS = {"parameters", "expect_metrics", "timeout_s"}


@dataclass(frozen=True)
class NotebookSpec:
    name: str
    path: Path
    parameters: Mapping[str, Any]
    expect_metrics: tuple[str, ...] = ()
    timeout_s: float | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    notebooks: tuple[NotebookSpec, ...]
    source: Path

    @property
    def notebook_names(self) -> list[str]:
        return [spec.name for spec in self.notebooks]


def available_profiles(experiments_dir: Path) -> list[str]:
    return sorted(p.stem for p in experiments_dir.glob("*.yaml"))


def available_notebooks(notebooks_dir: Path) -> list[str]:
    return sorted(p.stem for p in notebooks_dir.glob("*.ipynb"))


def _choices(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def _unknown_keys(found: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise LabError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {_choices(sorted(allowed))}")


def _notebook_spec(name: str, entry: Any, notebooks_dir: Path, where: str) -> NotebookSpec:
    entry = entry or {}
    if not isinstance(entry, Mapping):
        raise LabError(f"{where}: notebook {name!r} must map to a table of {_choices(sorted(NOTEBOOK_KEYS))}")
    _unknown_keys(entry, NOTEBOOK_KEYS, f"{where}: notebook {name!r}")
    path = notebooks_dir / f"{name}.ipynb"
    if not path.is_file():
        raise LabError(
            f"{where}: notebook {name!r} not found in {notebooks_dir}; "
            f"available notebooks: {_choices(available_notebooks(notebooks_dir))}"
        )
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise LabError(f"{where}: parameters of {name!r} must be a mapping of NAME: value")
    timeout = entry.get("timeout_s")
    return NotebookSpec(
        name=name,
        path=path,
        parameters=dict(parameters),
        expect_metrics=tuple(str(m) for m in entry.get("expect_metrics") or ()),
        timeout_s=None if timeout is None else float(timeout),
    )


def load_profile(name: str, experiments_dir: Path, notebooks_dir: Path) -> Profile:
    source = experiments_dir / f"{name}.yaml"
    if not source.is_file():
        raise LabError(
            f"unknown profile {name!r}; valid profiles: {_choices(available_profiles(experiments_dir))} "
            f"(from {experiments_dir})"
        )
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise LabError(f"{source}: invalid YAML: {error}") from error
    if not isinstance(data, Mapping):
        raise LabError(f"{source}: expected a mapping with keys {_choices(sorted(PROFILE_KEYS))}")
    _unknown_keys(data, PROFILE_KEYS, str(source))
    notebooks = data.get("notebooks") or {}
    if not isinstance(notebooks, Mapping) or not notebooks:
        raise LabError(f"{source}: 'notebooks' must map at least one notebook name to its settings")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        notebooks=tuple(_notebook_spec(str(nb), entry, notebooks_dir, str(source)) for nb, entry in notebooks.items()),
        source=source,
    )
