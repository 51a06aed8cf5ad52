"""Where report numbers come from: the MLflow store and committed result records.

Contract: both sources yield `Measurement`s, one per notebook execution (MLflow runs tagged
`lab.kind=record` that FINISHED; record JSON files under `reports/records/`, which carry their
device so GPU numbers committed to git show up without any store). `fetch_plots(measurement,
dest)` copies that measurement's PNG files into `dest` and returns their paths; it is called only
for measurements the report shows, so a large store is not downloaded.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.track.record import ResultRecord

UNKNOWN = "-"


@dataclass(frozen=True)
class Measurement:
    experiment: str
    notebook: str
    profile: str
    device: str
    created_at: _dt.datetime
    metrics: Mapping[str, float]
    params: Mapping[str, Any]
    source: str  # human-readable: "mlflow run <id>" or the record file path
    record_id: str | None
    run_id: str | None = None  # MLflow run, when from the store
    record_path: Path | None = None  # record file, when from records
    plot_refs: tuple[str, ...] = field(default=())  # artifact paths (MLflow) or files (records)

    @property
    def on_gpu(self) -> bool:
        return self.device != UNKNOWN and not self.device.startswith("cpu")


def _parse_time(text: str | None) -> _dt.datetime:
    try:
        parsed = _dt.datetime.fromisoformat(text or "")
    except ValueError:
        return _dt.datetime.fromtimestamp(0, _dt.timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def display_path(path: Path) -> str:
    """Relative to the project root when inside it, so committed reports name repo paths."""
    from lab.paths import project_root

    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def from_records(records_dir: Path) -> list[Measurement]:
    measurements = []
    for file in sorted(records_dir.rglob("*.json")) if records_dir.is_dir() else []:
        try:
            record = ResultRecord.load(file)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a record; the folder may hold other JSON
        plots = tuple(str(p) for p in record.artifact_paths(file.parent) if p.suffix.lower() == ".png" and p.is_file())
        measurements.append(Measurement(
            experiment=record.experiment,
            notebook=record.notebook or record.experiment,
            profile=record.profile or UNKNOWN,
            device=record.device or UNKNOWN,
            created_at=_parse_time(record.created_at),
            metrics=dict(record.metrics),
            params=dict(record.params),
            source=display_path(file),
            record_id=record.record_id,
            record_path=file,
            plot_refs=plots,
        ))
    return measurements


def from_mlflow(store: Any) -> list[Measurement]:
    """Measurements from a `lab.track.store.TrackingStore`."""
    from lab.track.store import (
        KIND_RECORD,
        TAG_DEVICE,
        TAG_EXPERIMENT,
        TAG_KIND,
        TAG_NOTEBOOK,
        TAG_PROFILE,
        TAG_RECORD_ID,
    )

    measurements = []
    for run in store.search(f"tags.`{TAG_KIND}` = '{KIND_RECORD}' and attributes.status = 'FINISHED'"):
        tags = run.data.tags
        experiment = tags.get(TAG_EXPERIMENT, UNKNOWN)
        measurements.append(Measurement(
            experiment=experiment,
            notebook=tags.get(TAG_NOTEBOOK, experiment),
            profile=tags.get(TAG_PROFILE, UNKNOWN),
            device=tags.get(TAG_DEVICE, UNKNOWN),
            created_at=_dt.datetime.fromtimestamp((run.info.start_time or 0) / 1000, _dt.timezone.utc),
            metrics=dict(run.data.metrics),
            params=dict(run.data.params),
            source=f"mlflow run {run.info.run_id}",
            record_id=tags.get(TAG_RECORD_ID),
            run_id=run.info.run_id,
        ))
    return measurements


def _png_artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found += _png_artifacts(client, run_id, info.path)
        elif info.path.lower().endswith(".png"):
            found.append(info.path)
    return found


def fetch_plots(measurement: Measurement, dest: Path, store: Any | None) -> list[Path]:
    copied = []
    if measurement.run_id is not None and store is not None:
        for artifact in _png_artifacts(store.client, measurement.run_id):
            dest.mkdir(parents=True, exist_ok=True)
            local = store.client.download_artifacts(measurement.run_id, artifact, str(dest / "download"))
            target = dest / Path(artifact).name
            shutil.move(local, target)
            copied.append(target)
        shutil.rmtree(dest / "download", ignore_errors=True)
    for ref in measurement.plot_refs:
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(ref).name
        shutil.copy2(ref, target)
        copied.append(target)
    return copied
