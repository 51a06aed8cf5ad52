"""Study 09, chaos drills: real faults through a real local service, and what they cost, from the client's side.

What `notebooks/09_chaos_drills.ipynb` calls (re-exported lazily: `from lab.studies import chaos`):
  config.DrillStudyConfig               -> the service and the drills to run (frozen, checked)
  runner.run_drills(config, run_dir)    -> DrillStudy: one DrillReport per drill, journals, metrics()
  catalog.load_drill(name)              -> Drill: chaos/<name>.yaml and its `lab-drill` extension
  metrics.drill_report(inputs)          -> DrillReport from journal + ledger + watch + state events
  plots.plot_outcomes(study)            -> request outcomes over time, fault start/end marked
  plots.plot_timeline(study)            -> detection, ejection, recovery and alerts per drill
  plots.drill_table(study)              -> one row of headline numbers per drill
  targets.target_rows(study)            -> the issue's targets, measured: TargetRow(drill, target, measured, met)
  targets.target_metrics(rows)          -> <drill>_target_<name>_met and targets_met_pct for the record
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "DrillStudyConfig": "lab.studies.chaos.config",
    "DrillStudy": "lab.studies.chaos.runner",
    "run_drills": "lab.studies.chaos.runner",
    "Drill": "lab.studies.chaos.catalog",
    "load_drill": "lab.studies.chaos.catalog",
    "DrillReport": "lab.studies.chaos.metrics",
    "drill_report": "lab.studies.chaos.metrics",
    "plot_outcomes": "lab.studies.chaos.plots",
    "plot_timeline": "lab.studies.chaos.plots",
    "drill_table": "lab.studies.chaos.plots",
    "target_rows": "lab.studies.chaos.targets",
    "target_metrics": "lab.studies.chaos.targets",
})
