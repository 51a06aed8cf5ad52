"""Run Triton kernels on the CPU through Triton's interpreter, so CI (no GPU) tests them too.

Import this module before any `lab.engine.kernels` module: without CUDA it sets
TRITON_INTERPRET=1 (read when a kernel is decorated) and skips the calling test module when
triton is not installed. The interpreter computes with numpy, so tests run the kernels in
float32 with small shapes; bf16 speed and precision are the GPU tests' business.
A test module whose kernels loop to a loaded scalar imports `interpreter_scalar_index` (autouse).
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


@pytest.fixture(autouse=True, scope="module")
def interpreter_scalar_index():
    """Triton 3.6's interpreter turns a loaded scalar (a 1-element numpy array) into a Python int
    with int(array), which numpy >= 2.3 refuses; loop bounds such as range(0, seq_len) need it.
    Use .item() instead for the importing module's kernels (a no-op on a GPU, where the kernels compile)."""
    if ON_GPU:
        yield
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patch
    yield
    interpreter._patch_lang_tensor = original
