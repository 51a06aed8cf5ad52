"""Study 07, MIG partitions: one replica per slice per layout, the mixed load, isolation, the slice model beside it.

What `notebooks/07_mig_partitions.ipynb` calls (re-exported lazily: `from lab.studies import mig`): `ReplicaSpec`
(`lab.studies.launcher`), `Workload` (`load`), `StudyConfig` / `run_study` / `study_metrics` / `record_note`
(`study`), `footprint` / `fit_rows` (`fit`), `layout_profiles` (`slices`), `targets` (`predict`).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ReplicaSpec": "lab.studies.launcher",
    "Workload": "lab.studies.mig.load",
    "StudyConfig": "lab.studies.mig.study",
    "run_study": "lab.studies.mig.study",
    "study_metrics": "lab.studies.mig.study",
    "record_note": "lab.studies.mig.study",
    "footprint": "lab.studies.mig.fit",
    "fit_rows": "lab.studies.mig.fit",
    "layout_profiles": "lab.studies.mig.slices",
    "targets": "lab.studies.mig.predict",
})
