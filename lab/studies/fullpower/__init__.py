"""Study 03, full power: the article's headline table, full power against three peers on one card.

What `notebooks/03_baseline_vs_fullpower.ipynb` calls (re-exported lazily: `from lab.studies import
fullpower`): `ReplicaSpec` (`lab.studies.launcher`) for the replicas (hf-cb, our engine before tuning, hf
generate, full power), `BenchConfig` / `RandomWorkload` (`lab.bench`) for the client, `ComparePlan` /
`measure_comparison` / `comparison_children` / `write_requests_csvs` (`compare`: one replica at a time, rate
then knee sweep, `load_sweep` sizing each point, `step_gaps` reading the longest gap between engine steps
from /metrics), `headline_metrics` (`headline`: max QPS at the SLO, saturation, P99 at each peer's max
load, the knee, the targets against hf-cb), `headline_markdown` (`table`), and the figures (`plots`).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ReplicaSpec": "lab.studies.launcher",
    "BenchConfig": "lab.bench.runner",
    "RandomWorkload": "lab.bench.workloads",
    "ComparePlan": "lab.studies.fullpower.compare",
    "measure_comparison": "lab.studies.fullpower.compare",
    "comparison_children": "lab.studies.fullpower.compare",
    "write_requests_csvs": "lab.studies.fullpower.compare",
    "EngineRun": "lab.studies.fullpower.headline",
    "headline_metrics": "lab.studies.fullpower.headline",
    "headline_markdown": "lab.studies.fullpower.table",
    "plot_load_comparison": "lab.studies.fullpower.plots",
    "plot_knee": "lab.studies.fullpower.plots",
    "plot_utilization": "lab.studies.fullpower.plots",
})
