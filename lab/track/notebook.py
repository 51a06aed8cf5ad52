"""The notebook side of tracking: where a notebook writes, and the call its last cell makes.

Contract: `lab reproduce` tells a notebook's kernel where it runs through environment variables
(the `ENV_*` names below); run interactively, none are set. `notebook_context(notebook)` reads
them once into a frozen `NotebookContext`:
- `run_dir`: `LAB_RUN_DIR`, else `runs/adhoc/<notebook>-<timestamp>/` under the project root
  (created), the folder for the record, plots and other outputs of this execution;
- `profile` (`LAB_PROFILE`), `parent_run_id` (`LAB_PARENT_RUN_ID`), `tracking_uri`
  (`MLFLOW_TRACKING_URI`, else the default store).
`record_notebook(...)`, called by the last cell of every notebook, builds the `ResultRecord`
(with `collect_environment()`), copies artifacts that live outside `run_dir` into it, writes
`<run_dir>/record.json` and logs the record to MLflow nested under the parent run when there is
one. It returns a `RecordedRun` with the record, its path and the MLflow run id.
`notebook_parameters(globals())` is how every record cell collects its params: the notebook's
parameters are its UPPER_CASE names (the `parameters` cell's convention, papermill's overrides
included), in definition order.
`scoped_environ(updates)` sets such variables for a block (the kernel a runner starts inherits them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.paths import ProjectLayout, timestamp_slug
from lab.track.record import ResultRecord

ENV_RUN_DIR = "LAB_RUN_DIR"
ENV_PROFILE = "LAB_PROFILE"
ENV_PARENT_RUN_ID = "LAB_PARENT_RUN_ID"
ENV_NOTEBOOK = "LAB_NOTEBOOK"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"

RECORD_FILE = "record.json"


@dataclass(frozen=True)
class NotebookContext:
    notebook: str
    run_dir: Path
    profile: str | None
    parent_run_id: str | None
    tracking_uri: str | None  # None: the default store

    def path(self, name: str) -> Path:
        """A path inside the run folder, for plots and other outputs."""
        return self.run_dir / name


@dataclass(frozen=True)
class RecordedRun:
    record: ResultRecord
    record_path: Path
    run_id: str


@contextlib.contextmanager
def scoped_environ(updates: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block, restoring the old values after it.

    `lab reproduce` uses it so the kernel papermill starts inherits the `ENV_*` variables.
    """
    previous = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def notebook_context(notebook: str, env: Mapping[str, str] | None = None,
                     layout: ProjectLayout | None = None) -> NotebookContext:
    """Read where this notebook execution writes (see module docstring); creates `run_dir`."""
    env = os.environ if env is None else env
    name = env.get(ENV_NOTEBOOK) or notebook
    if env.get(ENV_RUN_DIR):
        run_dir = Path(env[ENV_RUN_DIR])
    else:
        run_dir = (layout or ProjectLayout.discover()).runs_dir / "adhoc" / f"{name}-{timestamp_slug()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return NotebookContext(
        notebook=name,
        run_dir=run_dir.resolve(),
        profile=env.get(ENV_PROFILE) or None,
        parent_run_id=env.get(ENV_PARENT_RUN_ID) or None,
        tracking_uri=env.get(ENV_TRACKING_URI) or None,
    )


def notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE names of a notebook's namespace (`globals()`): its parameters, as the record keeps them."""
    return {name: value for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and not callable(value)}


def _into_run_dir(path: Path, run_dir: Path) -> str:
    """The artifact's path relative to run_dir, copying it there first when it lives elsewhere."""
    source = path.resolve()
    if source.is_relative_to(run_dir):
        return str(source.relative_to(run_dir))
    target = run_dir / source.name
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    return source.name


def record_notebook(
    experiment: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Sequence[str | Path] = (),
    children: Sequence[ResultRecord] = (),
    context: NotebookContext | None = None,
) -> RecordedRun:
    """Record this notebook execution: write record.json into the run folder and log to MLflow.

    `experiment` is the notebook's stable name (e.g. "00_quickstart"): the report and the
    claims table find results by it. `children` are sweep points (see `child_records`).
    """
    from lab.track.environment import collect_environment
    from lab.track.log import log_record

    ctx = context or notebook_context(experiment)
    record = ResultRecord(
        experiment=experiment,
        params=params,
        metrics=metrics,
        environment=collect_environment(),
        artifacts=tuple(_into_run_dir(Path(a), ctx.run_dir) for a in artifacts),
        profile=ctx.profile,
        notebook=ctx.notebook,
        children=tuple(children),
    )
    record_path = ctx.run_dir / RECORD_FILE
    run_id = log_record(
        record,
        record_path=record_path,
        tracking_uri=ctx.tracking_uri,
        parent_run_id=ctx.parent_run_id,
    )
    return RecordedRun(record=record, record_path=record_path, run_id=run_id)
