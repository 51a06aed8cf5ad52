"""Where the project's folders are.

Contract: `project_root()` returns the directory holding the project's `pyproject.toml`, found first
from this package's own location (an editable install or a checkout), then by walking up from the
current directory (an installed wheel used from inside a checkout), else the current directory.
`ProjectLayout` names every folder the lab reads or writes, derived from one root, so tests can
point the whole lab at a temporary directory by building a layout from `tmp_path`.
Nothing here creates directories; callers create what they write into.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

PROJECT_NAME = "deepseek-serving-lab"
AZURE_CONV_2023 = "azure_llm_2023_conv.csv"  # the one-hour Azure LLM 2023 conversation trace


def _is_project_root(directory: Path) -> bool:
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return False
    # Check the name so a pyproject.toml of some enclosing project is not mistaken for ours.
    return PROJECT_NAME in pyproject.read_text(encoding="utf-8", errors="replace")


def project_root(start: Path | None = None) -> Path:
    """The directory containing this project's pyproject.toml (see module docstring)."""
    package_parent = Path(__file__).resolve().parent.parent
    if start is None and _is_project_root(package_parent):
        return package_parent
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if _is_project_root(directory):
            return directory
    return here


def default_trace_path(root: Path | None = None) -> Path:
    """The Azure 2023 conversation trace shipped in the repository (`data/traces/`, CC-BY 4.0)."""
    return (root or project_root()) / "data" / "traces" / AZURE_CONV_2023


@dataclass(frozen=True)
class ProjectLayout:
    """Every folder of the lab, derived from the project root."""

    root: Path

    @classmethod
    def discover(cls) -> ProjectLayout:
        return cls(project_root())

    @property
    def experiments_dir(self) -> Path:
        return self.root / "experiments"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def runs_dir(self) -> Path:
        """Executed notebooks, records and plots of every run (gitignored)."""
        return self.root / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def committed_records_dir(self) -> Path:
        """GPU result records committed to git so reports show them without an MLflow store."""
        return self.reports_dir / "records"

    @property
    def mlruns_dir(self) -> Path:
        """The default MLflow store: a sqlite database plus an artifact folder (gitignored)."""
        return self.root / "mlruns"


def timestamp_slug(now: _dt.datetime | None = None) -> str:
    """A sortable, filesystem-safe local timestamp such as `20250919-172300`."""
    return (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
