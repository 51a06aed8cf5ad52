"""The MLflow tracking store of the lab: where it is, and the few queries the lab needs.

Contract:
- `resolve_tracking_uri(explicit)`: an explicit URI wins, then `MLFLOW_TRACKING_URI`, then the
  default `sqlite:///<project root>/mlruns/mlflow.db`.
- `artifact_root_for(uri)`: for a sqlite store, `<db folder>/artifacts` (so artifacts never land
  in the current directory, MLflow's default); None for other stores, which decide themselves.
- `TrackingStore.open(uri)` wraps an `MlflowClient`; `experiment_id(name)` gets or creates an
  experiment with that artifact location. mlflow is imported here, so import this module lazily.
- Tag names the lab writes on runs are the `TAG_*` constants below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from lab.paths import ProjectLayout

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

TAG_KIND = "lab.kind"  # KIND_RECORD | KIND_SWEEP_POINT | KIND_REPRODUCE
TAG_RECORD_ID = "lab.record_id"
TAG_SOURCE_RUN_ID = "lab.source_run_id"  # set by `lab track import`
TAG_EXPERIMENT = "lab.experiment"
TAG_NOTEBOOK = "lab.notebook"
TAG_PROFILE = "lab.profile"
TAG_DEVICE = "lab.device"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests runs by it
TAG_RUN_NAME = "mlflow.runName"

KIND_RECORD = "record"
KIND_SWEEP_POINT = "sweep-point"
KIND_REPRODUCE = "reproduce"

RECORD_ARTIFACT = "record.json"


def default_tracking_uri(layout: ProjectLayout | None = None) -> str:
    db = (layout or ProjectLayout.discover()).mlruns_dir / "mlflow.db"
    return f"sqlite:///{db}"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    prefix = "sqlite:///"  # sqlite:///relative/path or sqlite:////absolute/path
    if not uri.startswith(prefix):
        return None
    return Path(unquote(uri[len(prefix) :].split("?", 1)[0])).absolute()


def artifact_root_for(uri: str) -> str | None:
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "artifacts").as_uri()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "experiment"


@dataclass(frozen=True)
class TrackingStore:
    uri: str
    client: MlflowClient

    @classmethod
    def open(cls, tracking_uri: str | None = None) -> TrackingStore:
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        db = sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        return cls(uri=uri, client=MlflowClient(tracking_uri=uri))

    def experiment_id(self, name: str) -> str:
        """Id of experiment `name`, created (with the store's artifact location) when missing."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                self.client.restore_experiment(existing.experiment_id)
            return existing.experiment_id
        root = artifact_root_for(self.uri)
        location = None if root is None else f"{root}/{_slug(name)}"
        return self.client.create_experiment(name, artifact_location=location)

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def search(self, filter_string: str = "", experiment_ids: list[str] | None = None) -> list[Run]:
        """All active runs matching `filter_string`, newest first, across all pages."""
        ids = experiment_ids if experiment_ids is not None else self.experiment_ids()
        if not ids:
            return []
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                ids, filter_string, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def runs_with_tag(self, key: str, value: str) -> list[Run]:
        quoted = value.replace("'", "\\'")
        return self.search(f"tags.`{key}` = '{quoted}'")

    def child_runs(self, parent_run_id: str) -> list[Run]:
        return self.runs_with_tag(TAG_PARENT, parent_run_id)
