"""Attention for one engine step, in one folder: read a step's attention here, top to bottom.

  metadata.py   `AttentionMetadata` (the step's lists and device tensors), its decode/prefill split
  reference.py  the per-sequence torch oracle (GQA paged attention, MLA latent attention)
  decode.py     pure-decode steps without a Python loop over sequences: vectorized torch or Triton
  prefill.py    prefill, chunked prefill over cached context and mixed steps (SDPA, varlen Triton)
  gqa.py, mla.py  one entry per attention kind that picks among the above by `meta.backend`

Models (`lab/engine/models/`) call `gqa.py` / `mla.py` and the cache write; the Triton kernels
themselves live in `lab/engine/kernels/`.
"""
from lab.engine.attention.metadata import ATTENTION_BACKENDS, AttentionMetadata, PrefillSpan, StepSplit, build_step_tensors

__all__ = ["ATTENTION_BACKENDS", "AttentionMetadata", "PrefillSpan", "StepSplit", "build_step_tensors"]
