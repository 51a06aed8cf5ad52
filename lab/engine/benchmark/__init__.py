"""The engine's offline benchmark: decode sweeps against the HBM roofline, offline throughput, HF baseline.

Functions only (the `lab bench offline` CLI and `notebooks/01_engine_roofline.ipynb` call them):
  bandwidth.card_bandwidth(name)                 -> bytes/s of a card by device name
  roofline.step_bytes(llm, batch, avg_context)   -> StepBytes: weights read + KV read per decode step
  decode.measure_decode(llm, batch, ...)         -> DecodePoint: tokens/s, step time, MBU, roofline
  offline.offline_requests(n, lo, hi, vocab)     -> the nano-vllm workload (uniform in/out lengths)
  offline.measure_offline(llm, requests)         -> OfflinePoint
  hf_baseline.measure_hf(preset, ...)            -> HFPoint: transformers' generate, time-capped
  suite.run_preset(preset, ...)                  -> PresetResult (all of the above for one preset)
  suite.benchmark_metrics(results)               -> flat metrics for a `lab.track` record
"""
