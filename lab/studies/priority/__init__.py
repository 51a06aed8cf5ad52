"""Study 02, priority: FCFS (the plain path) against the gateway's tiers under overload, on a live service.

What `notebooks/02_priority_scheduling.ipynb` calls (re-exported lazily: `from lab.studies import
priority`): `ReplicaSpec` (`lab.studies.launcher`), `StudyConfig` / `run_study` (`study`: the
capacity, then the same seeded overload plan against both setups), `plot_tier_comparison` (`plots`),
and `TIERS` (`lab.tiers`, the article's tier table: names and queue timeouts).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ReplicaSpec": "lab.studies.launcher",
    "StudyConfig": "lab.studies.priority.study",
    "StudyResult": "lab.studies.priority.study",
    "run_study": "lab.studies.priority.study",
    "plot_tier_comparison": "lab.studies.priority.plots",
    "TIERS": "lab.tiers",
})
