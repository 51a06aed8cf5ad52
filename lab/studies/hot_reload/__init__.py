"""Study 05, hot reload: a replica's weights replaced while it serves a steady load, measured from both sides.

What `notebooks/05_hot_reload.ipynb` calls (re-exported lazily: `from lab.studies import hot_reload`):
`StudyConfig` / `ReloadStep` / `reload_plan` (`config`: the replica, the load, the reloads at their offsets),
`run_study` (`study`: one replica, a bounded Poisson load in the background, `POST /admin/reload` at each
offset, the refused corrupt source checked), `study_metrics` / `reload_rows` / `target_rows` /
`target_metrics` (`summary`: the record's metrics, a row per reload, the issue's targets as measured),
`plot_timeline` / `plot_itl` (`plots`), and the optional restart reference (`restart`: a cold start through
`lab bench coldstart`, when that module exists).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CORRUPT_KINDS": "lab.studies.hot_reload.config",
    "ReloadStep": "lab.studies.hot_reload.config",
    "StudyConfig": "lab.studies.hot_reload.config",
    "reload_plan": "lab.studies.hot_reload.config",
    "HotReloadRun": "lab.studies.hot_reload.study",
    "run_study": "lab.studies.hot_reload.study",
    "metric_prefix": "lab.studies.hot_reload.summary",
    "reload_rows": "lab.studies.hot_reload.summary",
    "study_metrics": "lab.studies.hot_reload.summary",
    "target_metrics": "lab.studies.hot_reload.summary",
    "target_rows": "lab.studies.hot_reload.summary",
    "plot_itl": "lab.studies.hot_reload.plots",
    "plot_timeline": "lab.studies.hot_reload.plots",
    "coldstart_available": "lab.studies.hot_reload.restart",
    "restart_metrics": "lab.studies.hot_reload.restart",
    "restart_references": "lab.studies.hot_reload.restart",
    "study_configs": "lab.studies.hot_reload.config",
    "write_reload_log": "lab.studies.hot_reload.summary",
})
