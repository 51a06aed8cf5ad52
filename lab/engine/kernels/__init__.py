"""Triton kernels for the decode hot path; CUDA only.

Nothing here is imported on a CPU: callers import a submodule lazily, after choosing the "triton"
backend, which the engine only does on CUDA (`kernels_available()` says whether it may).
  paged_decode.gqa_decode_triton   split-K paged decode attention, grouped-query heads
  mla_decode.mla_decode_triton     split-K paged decode attention over MLA latents (absorbed)
  kv_write.write_kv_triton         KV-cache row writes that skip padding slots (< 0)
  split_k.combine_splits           merges split-K partial softmax states (shared by both)
  fused_ops.*                      RMSNorm, RoPE and SiLU-and-multiply as one kernel each
  gemv.gemv                        skinny GEMM for decode-sized rows (M <= 16)
  gate_up_silu.gate_up_silu        the SwiGLU gate_up GEMV with SiLU-and-multiply in its epilogue
  rope_kv_write.rope_kv_write_triton      GQA decode: RoPE on q and k + the K/V cache write
  mla_latent_write.mla_rope_latent_write_triton  MLA decode: RoPE(q_pe) + [norm(c_kv) | RoPE(k_pe)] cache row
  fp8_gemm.*                       W8A8 block-scaled FP8 GEMM for decode rows (`lab.engine.fp8_gemm` picks it)
  int8_gemv.*                      W8A16 GEMV over int8 weights with per-row scales (`lab.engine.int8`)
  kv_quant.*                       8-bit KV cache rows (`lab.engine.kv_quant`): coded as the writers above store
                                   them; the attention kernels read the codes and fold the scales in (KV_8BIT)
The pure-torch paths in `lab.engine.attention.decode` and `lab.engine.attention` are the oracles.
"""
from __future__ import annotations

import importlib.util

import torch


def kernels_available(device: torch.device) -> bool:
    """True when the Triton kernels can run on `device` (a CUDA device with triton installed)."""
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None
