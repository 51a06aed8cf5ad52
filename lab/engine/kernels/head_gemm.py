"""Per-head small GEMM for MLA's absorbed decode: out[t, h] = a[t, h] @ W[h], at most 16 rows.

Why: absorbed MLA decode multiplies every head's query by its own W_UK (q_nope -> latent space)
and every head's attention output by its own W_UV (latent -> v). torch.bmm on a (H, T, K) view
costs a cuBLAS launch each, plus a `torch.cat` to put the latent query beside q_pe and a copy to
make the transposed output contiguous for o_proj: four launches (~10 us per layer in a CUDA
graph) around 4 MB of weights. Here one launch reads strided rows straight from the step's
tensors and writes straight into the caller's buffer (a column slice of the attention query, or
the (T, H * V) rows o_proj reads), so the cat and the copy disappear.

Contract: head_gemm(a (T, H, K), w (H, K, N), out (T, H, N) | None) -> out with
    out[t, h] == a[t, h] @ w[h]  (float32 accumulation, rounded once to out's dtype),
for T <= MAX_ROWS; a and out may be strided views with a contiguous last dim (out is allocated
contiguous when None); w must be contiguous. Program (h, n-block) reads its head's (K, BLOCK_N)
weight columns once and multiplies all T rows on tensor cores (rows padded to 16).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROWS = 16  # decode batches up to this size; larger ones are cuBLAS bmm's (compute-efficient there)


@triton.jit
def _head_gemm_kernel(
    a_ptr, w_ptr, o_ptr, T, K, N, stride_at, stride_ah, stride_wh, stride_wk, stride_ot, stride_oh,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    h = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    offs_kb = tl.arange(0, BLOCK_K)
    t_mask = offs_t < T
    n_mask = offs_n < N
    a_rows = a_ptr + offs_t[:, None] * stride_at + h * stride_ah
    w_head = w_ptr + h.to(tl.int64) * stride_wh
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + offs_kb
        k_mask = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=t_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_head + offs_k[:, None] * stride_wk + offs_n[None, :], mask=k_mask[:, None] & n_mask[None, :],
                    other=0.0)
        if IEEE:
            acc = tl.dot(a.to(w.dtype), w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a.to(w.dtype), w, acc)
    out = o_ptr + offs_t[:, None] * stride_ot + h * stride_oh + offs_n[None, :]
    tl.store(out, acc.to(o_ptr.dtype.element_ty), mask=t_mask[:, None] & n_mask[None, :])


def head_gemm(
    a: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, block_n: int = 64, block_k: int = 128,
    num_warps: int = 4,
) -> torch.Tensor:
    """a (T, H, K) with T <= MAX_ROWS, w (H, K, N) -> out (T, H, N); see the module contract."""
    num_rows, heads, k = a.shape
    if w.dim() != 3 or w.shape[0] != heads or w.shape[1] != k or num_rows > MAX_ROWS:
        raise ValueError(f"head_gemm takes a (T <= {MAX_ROWS}, H, K) and w (H, K, N); "
                         f"got {tuple(a.shape)} and {tuple(w.shape)}")
    n = w.shape[2]
    if out is None:
        out = torch.empty(num_rows, heads, n, dtype=a.dtype, device=a.device)
    elif out.shape != (num_rows, heads, n) or out.stride(-1) != 1:
        raise ValueError(f"head_gemm's out must be ({num_rows}, {heads}, {n}) with a contiguous last dim; "
                         f"got {tuple(out.shape)} with strides {out.stride()}")
    if a.stride(-1) != 1:
        a = a.contiguous()
    w = w if w.is_contiguous() else w.contiguous()
    if num_rows and heads and n:
        _head_gemm_kernel[(heads, triton.cdiv(n, block_n))](
            a, w, out, num_rows, k, n, a.stride(0), a.stride(1), w.stride(0), w.stride(1), out.stride(0), out.stride(1),
            BLOCK_T=16, BLOCK_N=block_n, BLOCK_K=block_k, IEEE=w.dtype == torch.float32, num_warps=num_warps,
        )
    return out
