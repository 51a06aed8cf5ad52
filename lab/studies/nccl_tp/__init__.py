"""Study 08, NCCL and tensor parallelism: the collective sweep against the link's peak, the NCCL knob table,
decode-size latency with and without CUDA graphs; and (once the engine has it) TP=1 vs TP=2 decode.

What `notebooks/08_nccl_tp.ipynb` calls (re-exported lazily: `from lab.studies import nccl_tp`):
  SweepConfig, resolve_backend, resolve_nproc, run_sweep -> lab.comm: the sweep under torchrun (nccl, or gloo)
  link_for_device, issue_targets           -> the link's peak and the issue's busbw and latency targets
  plot_busbw, plot_latency, sweep_table, knob_table, target_lines -> figures and tables
  study.run_knobs                          -> the knob variants, each in its own processes, as a table
  claim.claim_metrics                      -> the article's all-reduce claim: default vs the fastest knob, one size
  study.study_metrics / study_params / study_children / record_note -> the notebook's record
  tp_decode.TPDecodeConfig / compare_tp_decode / tp_metrics -> TP=1 vs TP=2 decode (not built yet: raises)
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "SweepConfig": "lab.comm.config",
    "resolve_backend": "lab.comm.config",
    "resolve_nproc": "lab.comm.launch",
    "run_sweep": "lab.comm.launch",
    "link_for_device": "lab.comm.links",
    "issue_targets": "lab.comm.targets",
    "plot_busbw": "lab.comm.plots",
    "plot_latency": "lab.comm.plots",
    "sweep_table": "lab.comm.tables",
    "knob_table": "lab.comm.tables",
    "target_lines": "lab.comm.tables",
    "KnobStudy": "lab.studies.nccl_tp.study",
    "run_knobs": "lab.studies.nccl_tp.study",
    "study_metrics": "lab.studies.nccl_tp.study",
    "study_params": "lab.studies.nccl_tp.study",
    "study_children": "lab.studies.nccl_tp.study",
    "record_note": "lab.studies.nccl_tp.study",
    "claim_metrics": "lab.studies.nccl_tp.claim",
    "TPDecodeConfig": "lab.studies.nccl_tp.tp_decode",
    "TPDecodeRow": "lab.studies.nccl_tp.tp_decode",
    "compare_tp_decode": "lab.studies.nccl_tp.tp_decode",
    "tp_metrics": "lab.studies.nccl_tp.tp_decode",
})
