"""environment.yml installs what pyproject.toml declares (dependencies + the dev extra), same bounds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def parse(requirement: str) -> tuple[str, str]:
    """(PEP 503 normalised name, specifier without spaces) of one requirement string."""
    match = REQUIREMENT.match(requirement)
    assert match, requirement
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    specifier = ",".join(sorted(part.strip() for part in match.group(3).replace(" ", "").split(",") if part))
    return name, specifier


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])
    return dict(parse(r) for r in declared)


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def environment_requirements() -> dict[str, str]:
    (pip,) = [d["pip"] for d in environment()["dependencies"] if isinstance(d, dict) and "pip" in d]
    return dict(parse(r) for r in pip if not r.startswith("-e"))


def test_environment_yml_lists_the_pyproject_packages() -> None:
    declared, listed = pyproject_requirements(), environment_requirements()
    assert sorted(set(declared) - set(listed)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(listed) - set(declared)) == [], "in environment.yml but not in pyproject.toml"


def test_environment_yml_uses_the_pyproject_bounds() -> None:
    declared, listed = pyproject_requirements(), environment_requirements()
    differing = {name: (declared[name], listed[name]) for name in declared if listed.get(name) != declared[name]}
    assert differing == {}


def test_environment_yml_is_a_conda_spec_for_this_project() -> None:
    env = environment()
    assert env["name"] == "deepseek-serving-lab" and env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert "-e ." in pip


def test_parse_normalises_names_and_specifiers() -> None:
    assert parse("Nvidia_ML.py >= 12, <14") == ("nvidia-ml-py", "<14,>=12")
    assert parse("ray[default]>=2.30,<3") == ("ray", "<3,>=2.30")
