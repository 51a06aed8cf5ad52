"""Bring results from elsewhere (a GPU machine, a colleague, git) into the local MLflow store.

Contract: `import_path(path)` accepts
- a result record JSON file, or a directory searched recursively for record JSON files
  (other JSON files are skipped with a warning);
- a `.tar` / `.tar.gz` / `.tgz` of an MLflow file store (`mlruns/`, as written on a GPU machine
  with `MLFLOW_ALLOW_FILE_STORE=true`), or such a store directory itself.
Every run is re-logged into the local store with its params, full metric history, tags, status,
start/end times, nesting and artifacts (read from the store's own `artifacts/` folders, since the
artifact URIs recorded on the GPU machine point at its disk). Imports are idempotent: a run
tagged `lab.source_run_id` = the source run id, or carrying an already-present
`lab.record_id`, is skipped, so importing twice creates nothing new.
"""

from __future__ import annotations

import dataclasses
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lab.errors import LabError
from lab.track.log import log_record
from lab.track.notebook import scoped_environ
from lab.track.record import ResultRecord
from lab.track.store import TAG_PARENT, TAG_RECORD_ID, TAG_RUN_NAME, TAG_SOURCE_RUN_ID, TrackingStore

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

TAG_SOURCE = "lab.source"  # where an imported run came from (a path), for humans
FINAL_STATUSES = {"FINISHED", "FAILED", "KILLED"}


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)  # local run ids created
    skipped: list[str] = field(default_factory=list)  # source ids already present locally
    warnings: list[str] = field(default_factory=list)


def import_path(path: str | Path, tracking_uri: str | None = None,
                store: TrackingStore | None = None) -> ImportSummary:
    source = Path(path)
    if not source.exists():
        raise LabError(f"nothing to import: {source} does not exist")
    store = store or TrackingStore.open(tracking_uri)
    summary = ImportSummary()
    if source.is_file() and tarfile.is_tarfile(source):
        with tempfile.TemporaryDirectory(prefix="lab-import-") as tmp:
            with tarfile.open(source) as archive:
                # The "data" filter refuses absolute paths, links out of the folder and devices.
                archive.extractall(tmp, filter="data")
            _import_file_stores(Path(tmp), source, store, summary)
    elif source.is_dir() and find_file_stores(source):
        _import_file_stores(source, source, store, summary)
    elif source.is_dir() or source.suffix == ".json":
        _import_records(source, store, summary)
    else:
        raise LabError(f"cannot import {source}: expected a record .json, a directory or a .tar/.tar.gz")
    return summary


# --- result records -------------------------------------------------------------------------
def _import_records(source: Path, store: TrackingStore, summary: ImportSummary) -> None:
    files = [source] if source.is_file() else sorted(source.rglob("*.json"))
    for file in files:
        try:
            record = ResultRecord.load(file)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            summary.warnings.append(f"skipped {file}: {error}")
            continue
        if store.runs_with_tag(TAG_RECORD_ID, record.record_id):
            summary.skipped.append(record.record_id)
            continue
        present = [a for a, p in zip(record.artifacts, record.artifact_paths(file.parent), strict=True) if p.exists()]
        if len(present) < len(record.artifacts):
            missing = sorted(set(record.artifacts) - set(present))
            summary.warnings.append(f"{file}: artifacts not found, imported without them: {', '.join(missing)}")
            record = dataclasses.replace(record, artifacts=tuple(present))
        run_id = log_record(record, artifacts_dir=file.parent, tags={TAG_SOURCE: str(file)}, store=store)
        summary.imported.append(run_id)


# --- MLflow file stores ---------------------------------------------------------------------
def find_file_stores(directory: Path) -> list[Path]:
    """Roots of MLflow file stores below `directory`: folders holding experiment folders."""
    roots = set()
    for meta in directory.rglob("meta.yaml"):
        try:
            data = yaml.safe_load(meta.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "experiment_id" in data and "run_id" not in data and "name" in data:
            roots.add(meta.parent.parent)
    return sorted(roots)


def _depth(run: Run, by_id: dict[str, Run]) -> int:
    depth, parent = 0, run.data.tags.get(TAG_PARENT)
    while parent in by_id and depth < 100:
        depth, parent = depth + 1, by_id[parent].data.tags.get(TAG_PARENT)
    return depth


def _import_file_stores(directory: Path, origin: Path, store: TrackingStore, summary: ImportSummary) -> None:
    from mlflow.tracking import MlflowClient

    roots = find_file_stores(directory)
    if not roots:
        raise LabError(f"{origin} holds no MLflow file store (no experiment meta.yaml found)")
    # MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set, and checks whenever it
    # builds one; the import only reads the extracted store, so the opt-in is scoped to it.
    with scoped_environ({"MLFLOW_ALLOW_FILE_STORE": "true"}):
        for root in roots:
            source = MlflowClient(tracking_uri=root.resolve().as_uri())
            for experiment in source.search_experiments():
                runs = _all_runs(source, experiment.experiment_id)
                by_id = {run.info.run_id: run for run in runs}
                local_ids: dict[str, str] = {}
                for run in sorted(runs, key=lambda r: (_depth(r, by_id), r.info.start_time or 0)):
                    local_ids[run.info.run_id] = _import_run(
                        source, root, experiment.name, run, local_ids, origin, store, summary
                    )


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _existing(store: TrackingStore, run: Run) -> str | None:
    matches = store.runs_with_tag(TAG_SOURCE_RUN_ID, run.info.run_id)
    record_id = run.data.tags.get(TAG_RECORD_ID)
    if not matches and record_id:
        matches = store.runs_with_tag(TAG_RECORD_ID, record_id)
    return matches[0].info.run_id if matches else None


def _import_run(source: MlflowClient, root: Path, experiment_name: str, run: Run,
                local_ids: dict[str, str], origin: Path, store: TrackingStore, summary: ImportSummary) -> str:
    from mlflow.entities import Param, RunTag

    existing = _existing(store, run)
    if existing is not None:
        summary.skipped.append(run.info.run_id)
        return existing
    tags = {k: v for k, v in run.data.tags.items() if k not in (TAG_PARENT, TAG_RUN_NAME)}
    tags[TAG_SOURCE_RUN_ID] = run.info.run_id
    tags[TAG_SOURCE] = str(origin)
    parent = local_ids.get(run.data.tags.get(TAG_PARENT, ""))
    if parent:
        tags[TAG_PARENT] = parent
    experiment_id = store.experiment_id(experiment_name)
    created = store.client.create_run(
        experiment_id, run_name=run.info.run_name, tags=tags, start_time=run.info.start_time
    )
    run_id = created.info.run_id
    try:
        params = [Param(k, v) for k, v in run.data.params.items()]
        for start in range(0, len(params), 100):
            store.client.log_batch(run_id, params=params[start : start + 100])
        history = [m for key in run.data.metrics for m in source.get_metric_history(run.info.run_id, key)]
        for start in range(0, len(history), 1000):
            store.client.log_batch(run_id, metrics=history[start : start + 1000])
        artifacts = root / run.info.experiment_id / run.info.run_id / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            store.client.log_artifacts(run_id, str(artifacts))
        elif not artifacts.is_dir():
            summary.warnings.append(f"run {run.info.run_id}: no artifacts folder in the archive")
    except BaseException:
        store.client.set_terminated(run_id, status="FAILED")
        raise
    status = run.info.status if run.info.status in FINAL_STATUSES else "FAILED"
    if status != run.info.status:
        summary.warnings.append(f"run {run.info.run_id} was {run.info.status} at the source; imported as FAILED")
        store.client.log_batch(run_id, tags=[RunTag("lab.source_status", run.info.status)])
    store.client.set_terminated(run_id, status=status, end_time=run.info.end_time)
    summary.imported.append(run_id)
    return run_id
