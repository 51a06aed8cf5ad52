"""The runs `lab track list` shows, read without importing mlflow when the store is a sqlite file.

Contract: `recent_runs(uri, limit)` returns up to `limit` `RunRow`s, newest first in MLflow's own order
(start time descending, runs without one last, then run id), active runs of active experiments only:
what `MlflowClient.search_runs` returns. A `sqlite:///` store is read with the standard library's
sqlite3, read-only and without creating anything (a missing file is an empty store), because importing
mlflow costs 5 to 10 s and the query milliseconds. Any other store, or a sqlite file without MLflow's
tables, goes through `MlflowClient`. `format_table(rows)` prints every name whole: each column is as
wide as its longest cell.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

from lab.track.store import TAG_DEVICE, TAG_PROFILE, sqlite_path

NOT_TAGGED = "-"


@dataclass(frozen=True)
class RunRow:
    run_id: str
    run_name: str
    experiment: str
    status: str
    start_time_ms: int | None
    profile: str  # the lab.profile tag, NOT_TAGGED when missing
    device: str  # the lab.device tag, NOT_TAGGED when missing


# MLflow's schema: runs.name is the run name, tags hold lab.*; order as SqlAlchemyStore orders search_runs.
_QUERY = """
SELECT r.run_uuid, r.name, e.name, r.status, r.start_time,
       (SELECT t.value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?),
       (SELECT t.value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?)
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid
LIMIT ?
"""


def recent_runs(uri: str, limit: int) -> list[RunRow]:
    db = sqlite_path(uri)
    if db is not None:
        if not db.exists():
            return []
        try:
            return _sqlite_runs(db.as_uri(), limit)
        except sqlite3.DatabaseError:
            pass  # not MLflow's schema (an empty file, another version): let MLflow read it
    return _mlflow_runs(uri, limit)


def _sqlite_runs(file_uri: str, limit: int) -> list[RunRow]:
    connection = sqlite3.connect(f"{file_uri}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute(_QUERY, (TAG_PROFILE, TAG_DEVICE, limit)).fetchall()
    finally:
        connection.close()
    return [RunRow(run_id, name or run_id, experiment, status, start, profile or NOT_TAGGED, device or NOT_TAGGED)
            for run_id, name, experiment, status, start, profile, device in rows]


def _mlflow_runs(uri: str, limit: int) -> list[RunRow]:
    from lab.track.store import TrackingStore

    store = TrackingStore.open(uri)
    names = {e.experiment_id: e.name for e in store.client.search_experiments()}
    if not names:
        return []
    runs = store.client.search_runs(list(names), max_results=limit, order_by=["attributes.start_time DESC"])
    return [RunRow(run.info.run_id, run.info.run_name or run.info.run_id, names[run.info.experiment_id],
                   run.info.status, run.info.start_time, run.data.tags.get(TAG_PROFILE, NOT_TAGGED),
                   run.data.tags.get(TAG_DEVICE, NOT_TAGGED)) for run in runs]


def format_table(rows: list[RunRow]) -> list[str]:
    header = ("started", "status", "experiment", "run", "profile", "device")
    cells = [header] + [(_started(r.start_time_ms), r.status, r.experiment, r.run_name, r.profile, r.device)
                        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]  # the last column is not padded
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in cells]


def _started(start_time_ms: int | None) -> str:
    if start_time_ms is None:
        return NOT_TAGGED
    return dt.datetime.fromtimestamp(start_time_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
