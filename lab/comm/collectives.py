"""One collective at one size on this rank: its buffers, the operation, and a check of its result (torch).

Contract: `prepare(plan, rank, nranks, dtype, device) -> Prepared`. `Prepared.check()` fills the input with
values every rank can predict, runs the operation once and returns (elements that differ from the expected
output, the first output element); then it zeroes the buffers so the timed runs that follow (`Prepared.run`)
cannot overflow (all_reduce works in place, and repeated sums of non-zero data grow without bound).
The check data, rank r of n:
- all_reduce: r+1 everywhere; every output element is 1 + 2 + ... + n;
- all_gather: r+1; output chunk k is k+1;
- reduce_scatter: input chunk j is (r+1)(j+1); rank r's output is (r+1)(1 + 2 + ... + n);
- all_to_all: input chunk j (sent to rank j) is r*n + j + 1; output chunk k (from rank k) is k*n + r + 1.
torch.distributed offers all_reduce only in place, the others out of place (nccl-tests times both forms).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lab.comm.bandwidth import BufferPlan

# torch 2.12 renamed the single-tensor gather/scatter (the old names warn); the lab supports torch >= 2.4.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
# Low-precision sums round differently on each backend; integers and float32/64 are compared exactly.
_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Prepared:
    run: Callable[[], None]
    check: Callable[[], tuple[int, float]]


def _chunks(values: list[float], per_chunk: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(per_chunk)


def _data(plan: BufferPlan, rank: int, n: int, dtype: torch.dtype, device: torch.device):
    """(input for the check, expected output) of this rank."""
    whole, per = plan.input_elems, plan.output_elems
    if plan.collective == "all_reduce":
        return torch.full((whole,), rank + 1, dtype=dtype, device=device), torch.full(
            (whole,), n * (n + 1) // 2, dtype=dtype, device=device)
    if plan.collective == "all_gather":
        return (torch.full((whole,), rank + 1, dtype=dtype, device=device),
                _chunks([k + 1 for k in range(n)], whole, dtype, device))
    if plan.collective == "reduce_scatter":
        return (_chunks([(rank + 1) * (j + 1) for j in range(n)], per, dtype, device),
                torch.full((per,), (rank + 1) * n * (n + 1) // 2, dtype=dtype, device=device))
    chunk = whole // n  # all_to_all
    return (_chunks([rank * n + j + 1 for j in range(n)], chunk, dtype, device),
            _chunks([k * n + rank + 1 for k in range(n)], chunk, dtype, device))


def _operation(collective: str, inp: torch.Tensor, out: torch.Tensor) -> Callable[[], None]:
    if collective == "all_reduce":
        return lambda: dist.all_reduce(inp)
    if collective == "all_gather":
        return lambda: _all_gather(out, inp)
    if collective == "reduce_scatter":
        return lambda: _reduce_scatter(out, inp)
    return lambda: dist.all_to_all_single(out, inp)


def prepare(plan: BufferPlan, rank: int, nranks: int, dtype: torch.dtype, device: torch.device) -> Prepared:
    check_input, expected = _data(plan, rank, nranks, dtype, device)
    inp = torch.zeros_like(check_input)
    out = inp if plan.collective == "all_reduce" else torch.zeros(plan.output_elems, dtype=dtype, device=device)
    run = _operation(plan.collective, inp, out)

    def check() -> tuple[int, float]:
        inp.copy_(check_input)
        run()
        got = out.double()
        rtol = _TOLERANCE.get(dtype, 0.0)
        wrong = int((~torch.isclose(got, expected.double(), rtol=rtol, atol=0.0)).sum().item())
        first = float(got[0].item())
        inp.zero_()
        out.zero_()
        return wrong, first

    return Prepared(run=run, check=check)
