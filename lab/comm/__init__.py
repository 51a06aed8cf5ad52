"""Collective communication: an nccl-tests-style sweep under torchrun, NCCL knob variants, the link's peak.

Where things are (one concept per file; only `collectives`, `timing` and `worker` import torch, and they run in
the torchrun processes):
  sizes        "1M" -> bytes, the geometric size range
  bandwidth    nccl-tests' S, algbw and busbw (doc/PERFORMANCE.md), element counts per rank
  config       SweepConfig: what a sweep runs, validated; the backend label ("gloo (CPU)" off NCCL)
  collectives  one collective's buffers, operation and result check on one rank
  timing       nccl-tests' timing loop; the same operation replayed from a CUDA graph (NCCL)
  worker       the torchrun entry point (`-m lab.comm.worker`): rank 0 writes a SweepResult
  results      SweepRow, LatencyRow, SweepResult: what crosses from the workers to the launcher
  launch       run_sweep: torchrun in fresh processes, a given environment, the result read back
  knobs        KnobVariant, the built-in NCCL variants, their environments (NVLS never touched)
  knob_sweep   one run per variant, and the table of ratios to the default at decode and large sizes
  links        the link's line rate and NCCL's achievable busbw (NVLink 4 on H100/H200 SXM), with sources
  targets      the issue's busbw and decode-latency targets, computed from a sweep
  summary      a sweep as the lab's result record (params, metrics, children)
  plots, tables  figures and text tables
  cli          `lab bench comm`
"""
