"""GPU and host telemetry for the lab: NVML queries, a background sampler, a small load, a plot, and
the CUDA caching allocator's memory (`memory*`: snapshots, fragmentation, a per-phase timeline, allocator
comparison).

Contract: nothing here requires a GPU to import. Every NVML call is guarded so a machine without a driver
(CI, a laptop) gets empty GPU data instead of an exception; a live allocator reading without CUDA raises
`LabError` saying so, while the allocator arithmetic runs anywhere. torch is imported at module level only
by `load`; `memory*` import it inside the functions that read the device.
"""
