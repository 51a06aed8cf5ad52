"""A small, timed matmul load to exercise a CPU or GPU while telemetry is sampled.

Contract: `run_matmul_load(size, seconds)` multiplies two seeded `size x size` matrices
repeatedly for at least `seconds` (after one warm-up product), synchronising the device so the
wall time is real, and returns a `MatmulResult` whose `gflops` counts 2*n^3 flops per product.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MatmulResult:
    device: str
    size: int
    dtype: str
    iterations: int
    elapsed_s: float

    @property
    def gflops(self) -> float:
        return 2.0 * self.size**3 * self.iterations / self.elapsed_s / 1e9


def resolve_device(device: str = "auto") -> str:
    """`auto` means CUDA when available, else CPU; anything else is passed to torch as is."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_matmul_load(
    size: int, seconds: float, device: str = "auto", dtype: str = "float32", seed: int = 0
) -> MatmulResult:
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    target = torch.device(resolve_device(device))
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(size, size, generator=generator, dtype=torch_dtype).to(target)
    b = torch.randn(size, size, generator=generator, dtype=torch_dtype).to(target)

    def synchronize() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize(target)

    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: kernel selection and allocation stay out of the timing
        synchronize()
        iterations = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            synchronize()
            iterations += 1
        elapsed = time.perf_counter() - start
    return MatmulResult(str(target), size, dtype, iterations, elapsed)
