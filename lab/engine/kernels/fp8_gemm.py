"""W8A8 block-scaled FP8 GEMM: y (M, N) = x (M, K) @ W (N, K)^T with DeepSeek's block scales, and the
per-token activation quantization that feeds it.

`quantize_act_fp8_triton(x, group)`: one program per (row, group of `group` columns): amax, scale =
max(amax, MIN_ACT_AMAX) / 448, codes = clamp(x / scale) in e4m3; the scale tensor (M, ceil(K/group)) float32
is written row-major, or column-major (`scale_col_major`: cuBLAS's block-wise `_scaled_mm` wants the
1x128 scales outer-dimension-major; `lab.engine.fp8_gemm` probes which).
`w8a8_block_matmul(x_fp8, x_scale, w_fp8, w_scale, block, bias, out_dtype)`: each program owns a
(BLOCK_M, BLOCK_N) tile of y and walks K one quantization group at a time (BLOCK_K == block[1]): an fp8 x fp8
tensor-core dot into float32, times scale_x[m, kb] * scale_w[n // block[0], kb], added to a float32
accumulator; bias and the cast at the end. W is read K-major as the fp8 wgmma wants (W's (N, K) layout, no
transpose copy). Small M (decode) splits K across programs so the SMs fill (float32 partials, then
`gemv._reduce_kernel` adds them and the bias). Shapes: any M, N, K (masked edges); block[1] >= 16 (tl.dot's
K), and >= 32 on a GPU for fp8 (the dispatcher only sends 128); strides: last dims contiguous.
Oracle: `lab.engine.fp8.w8a8_block_matmul_reference` (the same sums in float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lab.engine.fp8 import FP8_E4M3_MAX, MIN_ACT_AMAX
from lab.engine.kernels.gemv import _num_sms, _reduce_kernel

DECODE_MAX_M = 16  # up to here: one 16-row tile of x, K split across programs


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, stride_sm, stride_sg, min_amax, fp8_max,
                      GROUP: tl.constexpr):
    m = tl.program_id(0)
    g = tl.program_id(1)
    offs = g * GROUP + tl.arange(0, GROUP)
    mask = offs < K
    x = tl.load(x_ptr + m * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=0), min_amax)
    scale = amax / fp8_max
    q = tl.minimum(tl.maximum(x / scale, -fp8_max), fp8_max)
    tl.store(q_ptr + m * stride_qm + offs, q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + m * stride_sm + g * stride_sg, scale)


def quantize_act_fp8_triton(x: torch.Tensor, group: int, scale_col_major: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K), last dim contiguous -> (codes (M, K) float8_e4m3fn, scale (M, ceil(K/group)) float32)."""
    m, k = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    groups = triton.cdiv(k, group)
    q = torch.empty(m, k, dtype=torch.float8_e4m3fn, device=x.device)
    if scale_col_major:
        scale = torch.empty(groups, m, dtype=torch.float32, device=x.device).t()  # (M, G), stride (1, M)
    else:
        scale = torch.empty(m, groups, dtype=torch.float32, device=x.device)
    if m == 0 or k == 0:
        return q, scale
    _act_quant_kernel[(m, groups)](x, q, scale, k, x.stride(0), q.stride(0), scale.stride(0), scale.stride(1),
                                   MIN_ACT_AMAX, FP8_E4M3_MAX, GROUP=group, num_warps=1 if group <= 128 else 4)
    return q, scale


@dataclass(frozen=True)
class Fp8GemmConfig:
    block_m: int
    block_n: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3


def choose_fp8_config(m: int, n: int, k: int, group: int, num_sms: int = 132) -> Fp8GemmConfig:
    """Decode: 16 rows, narrow N tiles and split-K until >= 2 programs per SM (the weights are the bytes that
    matter); prefill: 64/128-square tiles, no split. A first-principles start; the lead's H100 runs tune it."""
    k_blocks = triton.cdiv(k, group)
    target = 2 * num_sms
    if m <= DECODE_MAX_M:
        block_n = 64 if triton.cdiv(n, 64) >= target else 32
        split = max(1, min(triton.cdiv(target, triton.cdiv(n, block_n)), k_blocks))
        return Fp8GemmConfig(16, block_n, split, num_warps=4, num_stages=3)
    if m <= 64:
        block_n = 128 if triton.cdiv(n, 128) * triton.cdiv(m, 64) >= num_sms else 64
        return Fp8GemmConfig(64, block_n, 1, num_warps=4, num_stages=3)
    return Fp8GemmConfig(128, 128, 1, num_warps=8, num_stages=3)


@triton.jit
def _w8a8_kernel(
    a_ptr, as_ptr, b_ptr, bs_ptr, bias_ptr, c_ptr, part_ptr,
    M, N, K, K_BLOCKS,
    stride_am, stride_asm, stride_asg, stride_bn, stride_bsn, stride_bsg, stride_cm,
    BLOCKS_PER_SPLIT: tl.constexpr, SCALE_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_kb = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    a_rows = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am  # (BLOCK_M, 1)
    b_cols = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn  # (1, BLOCK_N): W read as (BLOCK_K, BLOCK_N), K-major
    as_rows = as_ptr + offs_m * stride_asm
    bs_rows = bs_ptr + (offs_n // SCALE_ROWS) * stride_bsn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(0, BLOCKS_PER_SPLIT):
        kb = pid_k * BLOCKS_PER_SPLIT + i
        offs_k = kb * BLOCK_K + offs_kb
        k_mask = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_cols + offs_k[:, None], mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        # the last split may run past the K blocks (its codes load as zeros): its scales must not be read
        sa = tl.load(as_rows + kb * stride_asg, mask=m_mask & ((offs_m * 0 + kb) < K_BLOCKS), other=0.0)
        sb = tl.load(bs_rows + kb * stride_bsg, mask=n_mask & ((offs_n * 0 + kb) < K_BLOCKS), other=0.0)
        acc += tl.dot(a, b, out_dtype=tl.float32) * sa[:, None] * sb[None, :]
    mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)
    else:  # float32 partials (SPLIT_K, M, N)
        tl.store(part_ptr + (pid_k * M + offs_m[:, None]) * N + offs_n[None, :], acc, mask=mask)


def w8a8_block_matmul(
    x_fp8: torch.Tensor, x_scale: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor,
    block: tuple[int, int], bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
    config: Fp8GemmConfig | None = None,
) -> torch.Tensor:
    """x (M, K) fp8 with x_scale (M, ceil(K/block[1])); W (N, K) fp8 with w_scale (ceil(N/block[0]),
    ceil(K/block[1])) -> (M, N) in out_dtype. See the module docstring."""
    m, k = x_fp8.shape
    n = w_fp8.shape[0]
    rows, group = block
    k_blocks = triton.cdiv(k, group)
    if w_fp8.shape[1] != k or tuple(x_scale.shape) != (m, k_blocks) or tuple(w_scale.shape) != (triton.cdiv(n, rows), k_blocks):
        raise ValueError(f"w8a8_block_matmul: x {tuple(x_fp8.shape)} with scales {tuple(x_scale.shape)}, W "
                         f"{tuple(w_fp8.shape)} with scales {tuple(w_scale.shape)} do not fit {rows}x{group} blocks")
    if group < 16 or group & (group - 1):
        raise ValueError(f"the K group must be a power of two >= 16 (tl.dot), got {group}")
    if x_fp8.stride(-1) != 1:
        x_fp8 = x_fp8.contiguous()
    if w_fp8.stride(-1) != 1:
        w_fp8 = w_fp8.contiguous()
    y = torch.empty(m, n, dtype=out_dtype, device=x_fp8.device)
    if m == 0 or n == 0:
        return y
    cfg = config or choose_fp8_config(m, n, k, group, _num_sms(x_fp8.device))
    split = max(1, min(cfg.split_k, k_blocks))
    per_split = triton.cdiv(k_blocks, split)
    split = triton.cdiv(k_blocks, per_split)  # no empty splits
    part = torch.empty(split, m, n, dtype=torch.float32, device=x_fp8.device) if split > 1 else y
    b = bias if bias is not None else y  # a dummy pointer when HAS_BIAS is off
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n), split)
    _w8a8_kernel[grid](
        x_fp8, x_scale, w_fp8, w_scale, b, y, part, m, n, k, k_blocks,
        x_fp8.stride(0), x_scale.stride(0), x_scale.stride(1), w_fp8.stride(0), w_scale.stride(0), w_scale.stride(1),
        y.stride(0),
        BLOCKS_PER_SPLIT=per_split, SCALE_ROWS=rows, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=group,
        SPLIT_K=split, HAS_BIAS=bias is not None and split == 1, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split > 1:
        width = 1024
        _reduce_kernel[(m, triton.cdiv(n, width))](
            part, b, y, m, n, y.stride(0), SPLIT_K=split, HAS_BIAS=bias is not None, BLOCK=width, num_warps=4,
        )
    return y
