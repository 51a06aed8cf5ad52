"""Run Triton kernels on the CPU through Triton's interpreter, so CI (no GPU) tests them too.

Import this module before any `lab.engine.kernels` module: without CUDA it sets
TRITON_INTERPRET=1 (read when a kernel is decorated) and skips the calling test module when
triton is not installed. The interpreter computes with numpy, so tests run the kernels in
float32 with small shapes; bf16 speed and precision are the GPU tests' business.
"""
from __future__ import annotations

import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="triton is not installed")
DEVICE = "cuda" if ON_GPU else "cpu"
