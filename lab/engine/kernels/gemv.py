"""Skinny GEMM for decode: y (M, N) = x (M, K) @ W (N, K)^T (+ bias), M <= 16, bandwidth first.

Why: at batch 1 a decode step is a string of matrix-vector products; cuBLAS runs them at about
half the card's memory bandwidth (M=1 tiles waste most of a tensor-core tile, and small N leaves
SMs idle). Here each program owns BLOCK_N rows of W (nn.Linear layout, K contiguous) and streams
them with wide loads along K, accumulating in float32, so the kernel is a pure read of W at the
bandwidth the card gives when enough bytes are in flight.

Two ways to multiply (chosen by M):
  M == 1   CUDA-core multiply-add into a (BLOCK_N, BLOCK_K) float32 tile, one reduction at the end;
           small N gets small BLOCK_N (down to 1 row), so even o_proj (1536 rows) fills the SMs
           without splitting K.
  M >= 2   tensor cores: tl.dot of the W tile with x^T padded to 16 columns (BLOCK_N >= 16), and
           split-K (float32 partials, then `_reduce_kernel` adds them, the bias, and casts) when
           N / BLOCK_N alone would leave SMs idle.
Configs come from `choose_config` (a first-principles heuristic) unless `TUNED` holds one for the
(M class, N, K) shape; `scratch/bench_gemv.py` prints entries to paste there. Nothing is autotuned
at run time, so the kernels capture into CUDA graphs (no host syncs; shapes alone pick the path).

Contract: gemv(x (M, K), weight (N, K), bias (N,) | None, out_dtype) == F.linear(x, weight, bias)
with float32 accumulation, rounded once to out_dtype (x's dtype by default; LMHead asks float32).
x may be a row-strided view; its last dim and W must be contiguous.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from lab.engine.kernels.fused_ops import add_rms_norm_row

MAX_M = 16  # larger batches go to cuBLAS, which is compute-efficient there
TILE_ELEMENTS = 8192  # W elements per program per loop step: 64 per thread at 4 warps (8 x 16-byte loads)


@dataclass(frozen=True)
class GemvConfig:
    block_n: int  # rows of W per program (>= 16 when M >= 2: tl.dot's minimum)
    block_k: int  # columns of W per loop step (power of two)
    split_k: int = 1  # programs sharing one row block, each on a K range; > 1 adds a reduce kernel
    num_warps: int = 4
    num_stages: int = 2


# Measured winners per shape, keyed by (M class, N, K), M class = 1 (GEMV) or 16 (2 <= M <= 16).
# scratch/bench_gemv.py prints lines to paste here; shapes not listed use `choose_config`.
TUNED: dict[tuple[int, int, int], GemvConfig] = {  # scratch/bench_gemv.py --sweep qwen on an NVIDIA H200
    (1, 2048, 1536): GemvConfig(2, 2048, 1, 4, 1),  # qwen qkv: 3.6 vs 3.8 us
    (1, 1536, 1536): GemvConfig(4, 2048, 1, 8, 2),  # qwen o: 3.3 vs 3.7 us
    (1, 17920, 1536): GemvConfig(8, 2048, 1, 8, 2),  # qwen gate_up: 14.8 vs 16.0 us
    (1, 151936, 1536): GemvConfig(8, 512, 1, 4, 1),  # qwen lm_head: 104.5 vs 109.2 us
    # scratch/bench_absorb_router.py on an NVIDIA H200: V2-Lite's MoE router (float32 W, 64 experts), one
    # program per expert, no split-K: 1.6 us vs 3.0 us for the heuristic's split-K + reduce (cuBLAS: 6.0 us)
    (1, 64, 2048): GemvConfig(1, 2048, 1, 4, 1),
}


def m_class(m: int) -> int:
    return 1 if m == 1 else MAX_M


@lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132  # the Triton interpreter: any count; H100 / H200 have 132
    return torch.cuda.get_device_properties(device).multi_processor_count


@lru_cache(maxsize=1024)
def _config_for(m_cls: int, n: int, k: int, num_sms: int) -> GemvConfig:
    return choose_config(m_cls, n, k, num_sms)  # the heuristic depends on M only through its class


def choose_config(m: int, n: int, k: int, num_sms: int = 132) -> GemvConfig:
    """Enough programs for >= 2 per SM (bytes in flight hide DRAM latency), ~16 KB of W per step."""
    tuned = TUNED.get((m_class(m), n, k))
    if tuned is not None:
        return tuned
    target = 2 * num_sms
    k_pow2 = max(16, triton.next_power_of_2(k))
    if m == 1:
        block_n = 16
        while block_n > 1 and triton.cdiv(n, block_n) < target:
            block_n //= 2
        block_k = min(TILE_ELEMENTS // block_n, k_pow2)
        split_k = 1
        if n < num_sms:  # tiny N (not in the real models): only splitting K adds programs
            block_k = min(512, k_pow2)
            split_k = max(1, min(triton.cdiv(target, n), triton.cdiv(k, block_k)))
        return GemvConfig(block_n, block_k, split_k, num_warps=4, num_stages=2)
    block_n = 32 if triton.cdiv(n, 32) >= target else 16
    block_k = min(TILE_ELEMENTS // block_n, k_pow2)
    k_blocks = triton.cdiv(k, block_k)
    split_k = max(1, min(triton.cdiv(target, triton.cdiv(n, block_n)), k_blocks))
    return GemvConfig(block_n, block_k, split_k, num_warps=4, num_stages=3)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, res_ptr, nw_ptr, res_out_ptr, eps,
    M, N, K, stride_xm, stride_wn, stride_ym,
    K_PER_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr, EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    NORM: tl.constexpr = False, HAS_RES: tl.constexpr = False,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N  # constant along K: keeps the 16-byte vector loads
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn  # (BLOCK_N, 1); int64: vocab x hidden
    offs_kb = tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    k_start = pid_k * K_PER_SPLIT
    if USE_DOT:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for i in range(0, K_PER_SPLIT // BLOCK_K):
        offs_k = k_start + i * BLOCK_K + offs_kb
        if EVEN_K:  # no K mask at all: nothing for the compiler to prove about vector width
            w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None], other=0.0)
        else:
            k_mask = offs_k < K
            w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)
        if USE_DOT:
            x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
            if EVEN_K:
                x = tl.load(x_ptrs, mask=m_mask[:, None], other=0.0)
            else:
                x = tl.load(x_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(w, tl.trans(x.to(w.dtype)), acc, input_precision="ieee")
            else:
                acc = tl.dot(w, tl.trans(x.to(w.dtype)), acc)
        else:
            if NORM:  # one K step holds the whole row: normalize it here (program 0 stores the new residual)
                x = add_rms_norm_row(x_ptr, res_ptr, nw_ptr, res_out_ptr, offs_k, offs_k < K, K, eps, pid_n == 0,
                                     HAS_RES)
            elif EVEN_K:
                x = tl.load(x_ptr + offs_k)  # (BLOCK_K,): the one row (M == 1)
            else:
                x = tl.load(x_ptr + offs_k, mask=k_mask, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    if USE_DOT:
        out = acc  # (BLOCK_N, BLOCK_M)
    else:
        out = tl.sum(acc, axis=1)[:, None]  # (BLOCK_N, 1): BLOCK_M == 1
    mask = n_mask[:, None] & m_mask[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            out += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        tl.store(y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None], out.to(y_ptr.dtype.element_ty), mask=mask)
    else:  # float32 partials (SPLIT_K, M, N)
        tl.store(part_ptr + (pid_k * M + offs_m[None, :]) * N + offs_n[:, None], out, mask=mask)


@triton.jit
def _reduce_kernel(part_ptr, b_ptr, y_ptr, M, N, stride_ym,
                   SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + (s * M + m) * N + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def plan_split_k(k: int, cfg: GemvConfig) -> tuple[int, int]:
    """(splits, K per split) for `cfg`: at most cfg.split_k splits of whole K blocks, and none left empty."""
    k_blocks = triton.cdiv(k, cfg.block_k)
    split_k = max(1, min(cfg.split_k, k_blocks))
    k_per_split = triton.cdiv(k_blocks, split_k) * cfg.block_k
    return triton.cdiv(k, k_per_split), k_per_split


@dataclass(frozen=True)
class GemvLaunch:
    """What `gemv` and `int8_gemv` launch with: operands made contiguous, the output, the config and its split."""

    x: torch.Tensor
    weight: torch.Tensor
    y: torch.Tensor
    part: torch.Tensor  # (SPLIT_K, M, N) float32 partials, or y when there is one split
    cfg: GemvConfig
    split_k: int
    k_per_split: int
    use_dot: bool  # M >= 2: tl.dot over a 16-row tile; M == 1: a reduction


def prepare_launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype | None,
                   config: GemvConfig | None) -> GemvLaunch | torch.Tensor:
    """The launch of an (M, K) x (N, K)^T GEMV, or its finished output when there is nothing to launch (an empty
    M, N or K: the output, or the bias broadcast)."""
    (m, k), n = x.shape, weight.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    if weight.stride(-1) != 1 or weight.stride(0) != k:
        weight = weight.contiguous()
    y = torch.empty(m, n, dtype=out_dtype or x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    if k == 0:
        return y.copy_(bias.expand(m, n) if bias is not None else torch.zeros_like(y))
    cfg = config or _config_for(m_class(m), n, k, _num_sms(x.device))
    use_dot = m > 1
    if use_dot and cfg.block_n < 16:
        raise ValueError(f"M >= 2 uses tl.dot, which needs block_n >= 16; got {cfg}")
    split_k, k_per_split = plan_split_k(k, cfg)
    part = torch.empty(split_k, m, n, dtype=torch.float32, device=x.device) if split_k > 1 else y
    return GemvLaunch(x, weight, y, part, cfg, split_k, k_per_split, use_dot)


def reduce_splits(launch: GemvLaunch, bias: torch.Tensor | None) -> torch.Tensor:
    """Sum the split-K partials into the output (adding the bias there); the output as is for one split."""
    if launch.split_k > 1:
        (m, n), block = launch.y.shape, 1024
        _reduce_kernel[(m, triton.cdiv(n, block))](
            launch.part, bias if bias is not None else launch.y, launch.y, m, n, launch.y.stride(0),
            SPLIT_K=launch.split_k, HAS_BIAS=bias is not None, BLOCK=block, num_warps=4,
        )
    return launch.y


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    config: GemvConfig | None = None,
) -> torch.Tensor:
    """x (M, K) with M <= MAX_M, weight (N, K) contiguous -> (M, N) in out_dtype (default x.dtype)."""
    m, k = x.shape
    n = weight.shape[0]
    if m > MAX_M or weight.shape[1] != k:
        raise ValueError(f"gemv takes x (M <= {MAX_M}, K) and W (N, K); got {tuple(x.shape)}, {tuple(weight.shape)}")
    launch = prepare_launch(x, weight, bias, out_dtype, config)
    if isinstance(launch, torch.Tensor):
        return launch
    x, weight, y, cfg, split_k = launch.x, launch.weight, launch.y, launch.cfg, launch.split_k
    b = bias if bias is not None else y  # a dummy pointer when HAS_BIAS is off
    _gemv_kernel[(triton.cdiv(n, cfg.block_n), split_k)](
        x, weight, b, y, launch.part, x, x, x, 0.0, m, n, k, x.stride(0), weight.stride(0), y.stride(0),
        K_PER_SPLIT=launch.k_per_split, BLOCK_M=16 if launch.use_dot else 1, BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k, SPLIT_K=split_k, USE_DOT=launch.use_dot, EVEN_K=launch.k_per_split * split_k == k,
        HAS_BIAS=bias is not None and split_k == 1, IEEE=weight.dtype == torch.float32,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return reduce_splits(launch, bias)


NORM_MAX_K = TILE_ELEMENTS  # the prologue needs the whole row in one K step
# Measured winners keyed by (N, K); scratch/bench_norm_prologue.py on an NVIDIA H200: with the norm in
# the prologue, fewer programs (each re-reads the row from L2) and more warps per program pay off.
NORM_TUNED: dict[tuple[int, int], GemvConfig] = {
    (2048, 1536): GemvConfig(4, 2048, 1, 8, 1),  # qwen qkv: 4.02 us vs 4.16 (plain qkv 4.05 + norm launch 1.52)
}


def norm_prologue_config(n: int, k: int, num_sms: int) -> GemvConfig:
    """`NORM_TUNED`, else the M == 1 config with the whole row in one K step (block_k >= K), rows per program
    kept or cut so a step stays ~TILE_ELEMENTS of W."""
    if (n, k) in NORM_TUNED:
        return NORM_TUNED[(n, k)]
    cfg = _config_for(1, n, k, num_sms)
    if cfg.split_k == 1 and cfg.block_k >= k:
        return cfg
    block_k = max(16, triton.next_power_of_2(k))
    return GemvConfig(max(1, min(cfg.block_n, TILE_ELEMENTS // block_k)), block_k, 1, cfg.num_warps, 1)


def gemv_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, weight: torch.Tensor,
    bias: torch.Tensor | None = None, config: GemvConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One row: (RMSNorm(x + residual) @ W^T + b, x + residual), the add and norm in every program's
    prologue instead of a launch of their own (`add_rms_norm_triton`'s numbers; residual None: the norm of x,
    and x is the residual). The new residual is a new tensor: programs read the old one while it is written.

    Why: at batch 1 the norm's own launch (~1.8 us in a CUDA graph) costs more than re-reading the row
    (a few KB, from L2) in each program of the GEMV that consumes it."""
    k = x.shape[-1]
    n = weight.shape[0]
    if x.shape != (1, k) or weight.shape[1] != k or k > NORM_MAX_K or (residual is not None and residual.shape != x.shape):
        raise ValueError(f"gemv_add_rms_norm takes one row x (1, K <= {NORM_MAX_K}), a residual like it and W (N, K); "
                         f"got {tuple(x.shape)}, {None if residual is None else tuple(residual.shape)}, "
                         f"{tuple(weight.shape)}")
    x = x.contiguous()
    res_out = torch.empty_like(x) if residual is not None else x
    res = residual.contiguous() if residual is not None else x
    if weight.stride(-1) != 1 or weight.stride(0) != k:
        weight = weight.contiguous()
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    cfg = config or norm_prologue_config(n, k, _num_sms(x.device))
    if cfg.block_k < k:
        raise ValueError(f"gemv_add_rms_norm needs the whole row in one K step: block_k >= {k}, got {cfg}")
    _gemv_kernel[(triton.cdiv(n, cfg.block_n), 1)](
        x, weight, bias if bias is not None else y, y, y, res, norm_weight, res_out, eps, 1, n, k, k, k, n,
        K_PER_SPLIT=cfg.block_k, BLOCK_M=1, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT_K=1,
        USE_DOT=False, EVEN_K=cfg.block_k == k, HAS_BIAS=bias is not None, IEEE=False,
        NORM=True, HAS_RES=residual is not None, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return y, res_out
