"""Study 01, roofline: the engine's decode against the HBM roofline, offline throughput against transformers.

What `notebooks/01_engine_roofline.ipynb`, `lab bench offline` and `python -m lab.studies.roofline`
call (re-exported lazily: `from lab.studies import roofline`):
  bandwidth.card_bandwidth(name)                   -> bytes/s of a card by device name
  step_bytes.step_bytes(model, kv_bytes, batch, L) -> StepBytes: weights read + KV read per decode step
  decode.measure_decode(llm, batch, ...)           -> DecodePoint: tokens/s, step time, MBU, roofline
  offline.offline_requests(n, lo, hi, vocab)       -> the nano-vllm workload (uniform in/out lengths)
  offline.measure_offline(llm, requests)           -> OfflinePoint
  hf_baseline.measure_hf(preset, ...)              -> HFPoint: transformers' generate, time-capped
  suite.run_preset(preset, ...)                    -> PresetResult (all of the above for one preset)
  suite.benchmark_metrics(results)                 -> flat metrics for a `lab.track` record
  plot.plot_roofline(results)                      -> the figure
  cli.add_arguments / cli.run                      -> the command line (argparse only at import)
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "card_bandwidth": "lab.studies.roofline.bandwidth",
    "StepBytes": "lab.studies.roofline.step_bytes",
    "step_bytes": "lab.studies.roofline.step_bytes",
    "DecodePoint": "lab.studies.roofline.decode",
    "measure_decode": "lab.studies.roofline.decode",
    "OfflinePoint": "lab.studies.roofline.offline",
    "offline_requests": "lab.studies.roofline.offline",
    "measure_offline": "lab.studies.roofline.offline",
    "HFPoint": "lab.studies.roofline.hf_baseline",
    "measure_hf": "lab.studies.roofline.hf_baseline",
    "PresetResult": "lab.studies.roofline.suite",
    "run_preset": "lab.studies.roofline.suite",
    "benchmark_metrics": "lab.studies.roofline.suite",
    "benchmark_record": "lab.studies.roofline.suite",
    "plot_roofline": "lab.studies.roofline.plot",
})
