"""Study 04, scaling: forecasts and scaling policies on a simulated fleet driven by the Azure trace.

What `notebooks/04_predictive_scaling.ipynb` calls (re-exported lazily: `from lab.studies import
scaling`): the workload (`read_trace`, `WorkloadSpec`, `build_workload` from `lab.scale`), the engine
profile and prices (`study_profile`: the default, a profile file or a measured record; `default_profile`,
`load_profile`, `Prices`, `SpotMarket`), `ScalingStudy` /
`forecast_window` / `run_study` (`scenarios`), `summary_table` (`summary`) and the figures (`plots`).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "read_trace": "lab.scale.trace",
    "WorkloadSpec": "lab.scale.workload",
    "build_workload": "lab.scale.workload",
    "default_profile": "lab.scale.engine_profile",
    "load_profile": "lab.scale.engine_profile",
    "study_profile": "lab.studies.scaling.profile",
    "Prices": "lab.scale.cost",
    "SpotMarket": "lab.scale.cost",
    "ScalingStudy": "lab.studies.scaling.scenarios",
    "StudyResult": "lab.studies.scaling.scenarios",
    "forecast_window": "lab.studies.scaling.scenarios",
    "run_study": "lab.studies.scaling.scenarios",
    "summary_table": "lab.studies.scaling.summary",
    "plot_forecasts": "lab.studies.scaling.plots",
    "plot_replicas": "lab.studies.scaling.plots",
    "plot_comparison": "lab.studies.scaling.plots",
})
