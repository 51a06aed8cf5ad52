"""Where report numbers come from: committed result records and the MLflow store.

Contract: both sources yield `Measurement`s, one per notebook execution (record JSON files under a
records folder, `reports/records/` by default, which carry their device so GPU numbers committed to git
show without any store; MLflow runs tagged `lab.kind=record` that FINISHED). Each knows its `scale`
(`lab.report.scale`: only full-scale ones stand for claims), its hardware and code in words
(`lab.report.provenance`), and, for records, the files beside it: plots, NOTE.md, code.diff. Plots of a
record are linked where they lie; `fetch_plots(measurement, dest, store)` downloads an MLflow run's PNG
files into `dest`, and is called only for runs the report shows, so a large store is not downloaded.
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.report.provenance import CPU_PREFIX, UNKNOWN, describe_code, describe_hardware
from lab.report.scale import Scale, scale_of
from lab.track.flatten import flatten
from lab.track.record import CODE_DIFF_FILE, ResultRecord

NOTE_FILE = "NOTE.md"  # how a committed record was made and what it shows, beside its record.json
ENV_TAG_PREFIX = "lab."


@dataclass(frozen=True)
class Measurement:
    experiment: str
    notebook: str
    profile: str | None  # None: run by hand, outside `lab reproduce`
    scale: Scale
    device: str
    hardware: str  # "1× NVIDIA H200", "2-core CPU (AMD EPYC)"
    code: str  # "commit 3d02e495d1be + diff sha256 ..."
    created_at: _dt.datetime
    metrics: Mapping[str, float]
    params: Mapping[str, Any]
    source: str  # human-readable: "mlflow run <id>" or the record file path
    record_id: str | None
    run_id: str | None = None  # MLflow run, when from the store
    record_path: Path | None = None  # record file, when from records
    plot_refs: tuple[Path, ...] = field(default=())  # a record's plot files
    note_path: Path | None = None
    code_diff_path: Path | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device != UNKNOWN and not self.device.startswith(CPU_PREFIX)

    def value(self, metric: str | None) -> float | None:
        """The metric when it was recorded and is a number (records keep NaN for "could not measure")."""
        value = self.metrics.get(metric) if metric else None
        return value if value is not None and math.isfinite(value) else None


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


def _beside(file: Path, name: str) -> Path | None:
    path = file.with_name(name)
    return path if path.is_file() else None


def from_records(records_dir: Path) -> list[Measurement]:
    measurements = []
    for file in sorted(records_dir.rglob("*.json")) if records_dir.is_dir() else []:
        try:
            record = ResultRecord.load(file)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a record; the folder may hold other JSON
        env = flatten(record.environment)
        plots = tuple(p for p in record.artifact_paths(file.parent) if p.suffix.lower() == ".png" and p.is_file())
        measurements.append(Measurement(
            experiment=record.experiment,
            notebook=record.notebook or record.experiment,
            profile=record.profile,
            scale=scale_of(record.profile, committed=True),
            device=record.device or UNKNOWN,
            hardware=describe_hardware(env),
            code=describe_code(env),
            created_at=_parse_time(record.created_at),
            metrics=dict(record.metrics),
            params=dict(record.params),
            source=display_path(file),
            record_id=record.record_id,
            record_path=file,
            plot_refs=plots,
            note_path=_beside(file, NOTE_FILE),
            code_diff_path=_beside(file, CODE_DIFF_FILE) if record.code_diff else None,
        ))
    return measurements


def from_mlflow(store: Any) -> list[Measurement]:
    """Measurements from a `lab.track.store.TrackingStore`."""
    from lab.track.store import (
        KIND_RECORD,
        TAG_EXPERIMENT,
        TAG_KIND,
        TAG_NOTEBOOK,
        TAG_PROFILE,
        TAG_RECORD_ID,
    )

    measurements = []
    for run in store.search(f"tags.`{TAG_KIND}` = '{KIND_RECORD}' and attributes.status = 'FINISHED'"):
        tags = run.data.tags
        env = {k[len(ENV_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(ENV_TAG_PREFIX)}
        experiment = tags.get(TAG_EXPERIMENT, UNKNOWN)
        profile = tags.get(TAG_PROFILE)
        measurements.append(Measurement(
            experiment=experiment,
            notebook=tags.get(TAG_NOTEBOOK, experiment),
            profile=profile,
            scale=scale_of(profile, committed=False),
            device=env.get("device", UNKNOWN),
            hardware=describe_hardware(env),
            code=describe_code(env),
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


def fetch_plots(measurement: Measurement, dest: Path, store: Any) -> list[Path]:
    """Download an MLflow run's PNG artifacts into `dest`; a record's plots are not copied."""
    if measurement.run_id is None:
        return []
    copied = []
    for artifact in _png_artifacts(store.client, measurement.run_id):
        dest.mkdir(parents=True, exist_ok=True)
        local = store.client.download_artifacts(measurement.run_id, artifact, str(dest / "download"))
        target = dest / Path(artifact).name
        shutil.move(local, target)
        copied.append(target)
    shutil.rmtree(dest / "download", ignore_errors=True)
    return copied
