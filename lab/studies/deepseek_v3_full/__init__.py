"""Study 10, full-size DeepSeek-V3: one V3 decoder layer measured at its true size with the engine's modules, and
the cluster model planning the 671B model on it (layouts that fit, throughput, latency, cost, published anchors).

What `notebooks/10_deepseek_v3_full.ipynb` calls (re-exported lazily: `from lab.studies import deepseek_v3_full`):
  routing.RoutingAssumption / expected_load          -> the stated routing and the expert load it gives
  study.measure_profile(layer_kwargs, weights, sweep) -> ProfileRun: layer metrics per weight format (torch)
  sweep.SweepConfig                                   -> batches, contexts, prefill tokens, routing, repeats
  summary.fit_rows / fit_metrics / component_table    -> the 10 % fit check on held-out batches; tables
  plan.Assumptions / CLUSTERS / plan_cluster          -> layouts that fit a cluster and their predictions
  plan.AnchorSetting / anchor_rows                    -> predicted vs published anchors, error in %
  study.layer_profile(record_path, ...)                -> a record's layer metrics, or measured here
  study.cluster_profile(run, layer_time, ...)          -> the layer times the cluster model uses, and a label
  plan.anchor_settings / plan_metrics / anchor_metrics -> the notebook's settings and the record's metrics
  anchor_split.anchor_splits / split_lines / miss_reasons / split_metrics -> each anchor's step by component and
                                                        communication, against its bound and the published step
Only `study.measure_profile` (and `layer`, `sweep`, `timer`) import torch.
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "RoutingAssumption": "lab.studies.deepseek_v3_full.routing",
    "expected_load": "lab.studies.deepseek_v3_full.routing",
    "SweepConfig": "lab.studies.deepseek_v3_full.sweep",
    "measure_profile": "lab.studies.deepseek_v3_full.study",
    "card_name": "lab.studies.deepseek_v3_full.study",
    "profile_from_metrics": "lab.studies.deepseek_v3_full.study",
    "load_record": "lab.studies.deepseek_v3_full.study",
    "fit_rows": "lab.studies.deepseek_v3_full.summary",
    "fit_metrics": "lab.studies.deepseek_v3_full.summary",
    "component_table": "lab.studies.deepseek_v3_full.summary",
    "Assumptions": "lab.studies.deepseek_v3_full.plan",
    "AnchorSetting": "lab.studies.deepseek_v3_full.plan",
    "CLUSTERS": "lab.studies.deepseek_v3_full.plan",
    "plan_cluster": "lab.studies.deepseek_v3_full.plan",
    "anchor_rows": "lab.studies.deepseek_v3_full.plan",
    "anchor_settings": "lab.studies.deepseek_v3_full.plan",
    "plan_metrics": "lab.studies.deepseek_v3_full.plan",
    "anchor_metrics": "lab.studies.deepseek_v3_full.plan",
    "layer_profile": "lab.studies.deepseek_v3_full.study",
    "cluster_profile": "lab.studies.deepseek_v3_full.study",
    "anchor_splits": "lab.studies.deepseek_v3_full.anchor_split",
    "split_lines": "lab.studies.deepseek_v3_full.anchor_split",
    "miss_reasons": "lab.studies.deepseek_v3_full.anchor_split",
    "split_metrics": "lab.studies.deepseek_v3_full.anchor_split",
})
