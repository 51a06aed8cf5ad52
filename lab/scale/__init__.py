"""The predictive scaler: forecasts, policies, a cost model, a fleet simulator and replica pools.

Contract: everything here is torch-free and runs on a CPU. Layers, each behind a small protocol:
- `forecast` / `prophet_forecaster` / `backtest`: `Forecaster.fit(history)` then `predict(horizon)`
  returning a `Forecast` with intervals; MAPE and interval coverage on held-out windows.
- `signals` / `policy` / `reactive` / `predictive` / `target_tracking`: a `Policy` turns `LoadSignals`
  (what the gateway and replicas export) into a typed `ScalingDecision`.
- `cost`: prices per GPU-hour, spot interruptions, cold start; GPU-hours, cost, SLO attainment.
- `engine_profile` / `trace` / `workload` / `tiers` / `fleet` / `simulator` / `timeline`: a
  tick-based fleet simulator fed by trace-driven multi-day workloads, calibrated from a measured
  engine profile (`profiles/default.json` is an illustrative default).
- `pool` / `local_pool` / `replica_metrics` / `gateway_sync` / `control_loop`: the live path: replicas
  as `lab serve` processes, their /metrics as signals, ready endpoints handed to the gateway.
- `cli` / `simulate_command`: `lab scale simulate` and `lab scale run`.
- `cluster/`: a cluster model of full-size DeepSeek-V3/R1 (memory, step time, throughput per GPU for a
  parallel layout); `roofline_profile`: an engine profile from a roofline record (notebook 01, `lab bench
  offline`), under the metric names of `profile_metrics`.
Notebook 04's comparisons, metrics and figures are a study (`lab.studies.scaling`).
Submodules are imported explicitly (`from lab.scale.simulator import simulate`); this package
imports nothing heavy, so `lab --help` stays fast.
"""
