"""Log result records to MLflow: one run per record, nested runs for sweeps and batch runs.

Contract:
- `log_record(record, ...)` writes the record JSON (when `record_path` is given) and creates one
  MLflow run holding: params flattened to dotted keys (values truncated to MLflow's limit), the
  metrics, the environment as `lab.*` tags (`lab.device`, `lab.git_sha`, `lab.gpu.count`, ...),
  `record.json` (plus `code.diff` when it ran uncommitted code) and the record's artifacts as
  artifacts. Each child record becomes a nested run.
  With `parent_run_id` the run is nested under that run and lives in the parent's experiment
  (the MLflow UI only nests runs of one experiment); otherwise in experiment `record.experiment`.
  Returns the run id.
- `parent_run(...)` is a context manager for a run that groups others (a `lab reproduce` batch,
  a hand-written sweep): it yields a `RunHandle`; children log with `parent_run_id=handle.run_id`.
- A run is marked FINISHED only after everything was logged. Any failure on the way ends it
  FAILED (and its parent, for children) and re-raises, so the store never shows a half-written
  run as complete. Missing artifact files are reported before any run is created.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.track.flatten import as_text, flatten
from lab.track.record import ResultRecord
from lab.track.store import (
    KIND_RECORD,
    KIND_SWEEP_POINT,
    RECORD_ARTIFACT,
    TAG_DEVICE,
    TAG_EXPERIMENT,
    TAG_KIND,
    TAG_NOTEBOOK,
    TAG_PARENT,
    TAG_PROFILE,
    TAG_RECORD_ID,
    TrackingStore,
)

# MLflow's documented limits (mlflow.utils.validation); values are truncated before logging.
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
BATCH_SIZE = 100  # MLflow accepts at most 100 params+tags and 1000 metrics per log_batch call


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    experiment_id: str
    tracking_uri: str


def environment_tags(environment: Mapping[str, Any]) -> dict[str, str]:
    """`collect_environment()` as run tags: `lab.git_sha`, `lab.device`, `lab.gpu.count`, ..."""
    flat = flatten(environment)
    return {f"lab.{key}": as_text(value, MAX_TAG_VALUE_CHARS) for key, value in flat.items() if value is not None}


def record_tags(record: ResultRecord, kind: str) -> dict[str, str]:
    """The `lab.*` tags of a record's run: identity plus the flattened environment."""
    tags: dict[str, Any] = dict(environment_tags(record.environment))
    identity = {
        TAG_KIND: kind,
        TAG_RECORD_ID: record.record_id,
        TAG_EXPERIMENT: record.experiment,
        TAG_NOTEBOOK: record.notebook,
        TAG_PROFILE: record.profile,
        TAG_DEVICE: record.device,
    }
    tags.update({key: value for key, value in identity.items() if value is not None})
    return {key: as_text(value, MAX_TAG_VALUE_CHARS) for key, value in tags.items()}


def _default_run_name(record: ResultRecord, kind: str) -> str:
    if kind == KIND_SWEEP_POINT:
        return as_text(", ".join(f"{k}={v}" for k, v in flatten(record.params).items()), 200) or "point"
    name = record.notebook or record.experiment
    return f"{name} [{record.profile}]" if record.profile else name


def _check_artifacts(record: ResultRecord, base_dir: Path) -> None:
    missing = [str(p) for p in record.artifact_paths(base_dir) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"artifacts of record {record.experiment!r} not found: {', '.join(missing)}")
    for child in record.children:
        _check_artifacts(child, base_dir)


def log_fields(store: TrackingStore, run_id: str, params: Mapping[str, Any], metrics: Mapping[str, float],
               tags: Mapping[str, str]) -> None:
    """Log params (flattened), metrics and tags in MLflow-sized batches."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    entries: list[Param | RunTag] = [
        Param(key, as_text(value, MAX_PARAM_VALUE_CHARS)) for key, value in flatten(params).items()
    ]
    entries += [RunTag(key, value) for key, value in tags.items()]
    for start in range(0, len(entries), BATCH_SIZE):
        chunk = entries[start : start + BATCH_SIZE]
        store.client.log_batch(
            run_id,
            params=[e for e in chunk if isinstance(e, Param)],
            tags=[e for e in chunk if isinstance(e, RunTag)],
        )
    metric_list = [Metric(key, value, now, 0) for key, value in metrics.items()]
    for start in range(0, len(metric_list), 1000):
        store.client.log_batch(run_id, metrics=metric_list[start : start + 1000])


def _log_artifact_paths(store: TrackingStore, run_id: str, paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            store.client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            store.client.log_artifact(run_id, str(path))


@contextlib.contextmanager
def _run(store: TrackingStore, experiment_id: str, run_name: str, tags: Mapping[str, str],
         start_time: int | None = None) -> Iterator[str]:
    """Create a run; end it FINISHED after the block, FAILED if the block raises."""
    run = store.client.create_run(experiment_id, run_name=run_name, tags=dict(tags), start_time=start_time)
    run_id = run.info.run_id
    try:
        yield run_id
    except BaseException:
        store.client.set_terminated(run_id, status="FAILED")
        raise
    store.client.set_terminated(run_id, status="FINISHED")


def _log(store: TrackingStore, record: ResultRecord, base_dir: Path, experiment_id: str,
         parent_run_id: str | None, run_name: str | None, kind: str, extra_tags: Mapping[str, str]) -> str:
    tags = dict(extra_tags)
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    with _run(store, experiment_id, run_name or _default_run_name(record, kind), tags) as run_id:
        log_fields(store, run_id, record.params, record.metrics, record_tags(record, kind))
        if kind == KIND_RECORD:
            # Children are inside the parent's record.json; they need no copy of their own.
            with tempfile.TemporaryDirectory(prefix="lab-record-") as tmp:
                saved = record.save(Path(tmp) / RECORD_ARTIFACT)
                store.client.log_artifact(run_id, str(saved))
                diff = record.code_diff_path(saved)
                if diff is not None:
                    store.client.log_artifact(run_id, str(diff))
        _log_artifact_paths(store, run_id, record.artifact_paths(base_dir))
        for child in record.children:
            _log(store, child, base_dir, experiment_id, run_id, None, KIND_SWEEP_POINT, {})
    return run_id


def log_record(
    record: ResultRecord,
    *,
    record_path: str | Path | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts_dir: str | Path | None = None,
    store: TrackingStore | None = None,
) -> str:
    """Write `record` to `record_path` (if given) and log it as one MLflow run; see module doc.

    Relative artifact paths are resolved against `artifacts_dir`, else `record_path`'s folder,
    else the current directory. `experiment` overrides the MLflow experiment when there is no
    parent run. `tags` are extra run tags (e.g. where an imported record came from).
    """
    if artifacts_dir is not None:
        base_dir = Path(artifacts_dir)
    else:
        base_dir = Path(record_path).parent if record_path is not None else Path.cwd()
    _check_artifacts(record, base_dir)
    if record_path is not None:
        record.save(record_path)
    store = store or TrackingStore.open(tracking_uri)
    if parent_run_id:
        experiment_id = store.client.get_run(parent_run_id).info.experiment_id
    else:
        experiment_id = store.experiment_id(experiment or record.experiment)
    return _log(store, record, base_dir, experiment_id, parent_run_id, run_name, KIND_RECORD, tags or {})


@contextlib.contextmanager
def parent_run(
    experiment: str,
    *,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    store: TrackingStore | None = None,
) -> Iterator[RunHandle]:
    """A run grouping nested runs; FINISHED when the block ends, FAILED when it raises."""
    store = store or TrackingStore.open(tracking_uri)
    experiment_id = (
        store.client.get_run(parent_run_id).info.experiment_id if parent_run_id else store.experiment_id(experiment)
    )
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    with _run(store, experiment_id, run_name, all_tags) as run_id:
        log_fields(store, run_id, params or {}, {}, {})
        yield RunHandle(run_id=run_id, experiment_id=experiment_id, tracking_uri=store.uri)


def attach_artifact(run_id: str, path: str | Path, *, artifact_path: str | None = None,
                    tracking_uri: str | None = None, store: TrackingStore | None = None) -> None:
    """Add one file to an existing (possibly finished) run, e.g. the executed notebook."""
    store = store or TrackingStore.open(tracking_uri)
    store.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
