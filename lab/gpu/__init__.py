"""GPU and host telemetry for the lab: NVML queries, a background sampler, a small load, a plot.

Contract: nothing here requires a GPU. Every NVML call is guarded so a machine without a driver
(CI, a laptop) gets empty GPU data instead of an exception; torch is imported only by `load`.
"""
