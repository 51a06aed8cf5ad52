"""Study 01, roofline: the engine's decode against the HBM roofline, and against transformers and its peers.

What `notebooks/01_engine_roofline.ipynb`, `lab bench offline` and `python -m lab.studies.roofline`
call (re-exported lazily: `from lab.studies import roofline`):
  bandwidth.card_bandwidth(name)                   -> bytes/s of a card by device name
  step_bytes.step_bytes(model, kv_bytes, batch, L) -> StepBytes: weights read + KV read per decode step
  decode.measure_decode(llm, batch, ...)           -> DecodePoint: tokens/s, step time, MBU, roofline
  offline.offline_requests(n, lo, hi, vocab)       -> the nano-vllm workload (uniform in/out lengths)
  offline.measure_offline(llm, requests)           -> OfflinePoint
  hf_baseline.measure_hf(model, ...)               -> HFPoint: transformers' generate, time-capped (the floor)
  peers.PeerConfig(compile, warmup_calls, ...)     -> how the peers run
  peers.measure_peers(hf_model, prompt, n, ...)    -> PeerResults: static-cache generate compiled (hf_static),
                                                      our gpt-fast-style loop (gptfast), continuous batching (hf_cb)
  suite.run_preset(preset, ...)                    -> PresetResult (all of the above for one preset)
  suite.benchmark_metrics(results)                 -> flat metrics for a `lab.track` record (peer_metrics inside)
  suite.peer_failures(results)                     -> {preset: {peer: error}} for the record's params
  plot.plot_roofline(results)                      -> the figure
  peer_view.peer_table(results) / plot_peers       -> engine and peers side by side: a DataFrame, a figure
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
    "PeerConfig": "lab.studies.roofline.peers",
    "PeerResults": "lab.studies.roofline.peers",
    "measure_peers": "lab.studies.roofline.peers",
    "peer_rows": "lab.studies.roofline.peer_view",
    "peer_table": "lab.studies.roofline.peer_view",
    "plot_peers": "lab.studies.roofline.peer_view",
    "PresetResult": "lab.studies.roofline.suite",
    "run_preset": "lab.studies.roofline.suite",
    "benchmark_metrics": "lab.studies.roofline.suite",
    "benchmark_record": "lab.studies.roofline.suite",
    "peer_failures": "lab.studies.roofline.suite",
    "plot_roofline": "lab.studies.roofline.plot",
})
