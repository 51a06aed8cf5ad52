"""Result records and their MLflow tracking.

Public API (what notebooks and other packages call):
- `ResultRecord`, `child_records(experiment, [(params, metrics), ...])`   (lab.track.record)
- `collect_environment()`                                               (lab.track.environment)
- `notebook_context(notebook)`, `notebook_parameters(globals())`, `record_notebook(experiment, params,
  metrics, artifacts=(), children=(), context=None)`                    (lab.track.notebook)
- `log_record(record, *, record_path, tracking_uri, run_name, parent_run_id, ...)`,
  `parent_run(experiment, *, run_name, ...)`, `attach_artifact(run_id, path)`   (lab.track.log)
- `import_path(path, tracking_uri=None)`                                 (lab.track.importer)
- `TrackingStore`, `resolve_tracking_uri(explicit)`                      (lab.track.store)

Names are resolved on first use (PEP 562) so `import lab.track` stays cheap: mlflow and torch are
imported only when something is logged, keeping `lab --help` fast.

Importing this package turns MLflow's usage telemetry off unless the environment says otherwise
(`MLFLOW_DISABLE_TELEMETRY=false`): the lab talks to nothing beyond 127.0.0.1. MLflow reads the
variable when it is first imported, which always happens after this package is imported.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_EXPORTS = {
    "ResultRecord": "lab.track.record",
    "child_records": "lab.track.record",
    "collect_environment": "lab.track.environment",
    "NotebookContext": "lab.track.notebook",
    "RecordedRun": "lab.track.notebook",
    "notebook_context": "lab.track.notebook",
    "notebook_parameters": "lab.track.notebook",
    "record_notebook": "lab.track.notebook",
    "RunHandle": "lab.track.log",
    "log_record": "lab.track.log",
    "parent_run": "lab.track.log",
    "attach_artifact": "lab.track.log",
    "ImportSummary": "lab.track.importer",
    "import_path": "lab.track.importer",
    "TrackingStore": "lab.track.store",
    "resolve_tracking_uri": "lab.track.store",
    "default_tracking_uri": "lab.track.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.track' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
