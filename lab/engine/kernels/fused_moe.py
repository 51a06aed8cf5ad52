"""Fused routed experts for decode: a few tokens' top-k experts in two Triton kernels, no sorting.

Why: at batch 1 a V2-Lite MoE layer reads 6 experts (~104 MB of bf16 weights) and should take
~25 us; `torch._grouped_mm` at ~1 row per expert reads them at a fraction of the bandwidth, and the
argsort / searchsorted / index_select / index_add around it are six more kernels. Here each
(token, expert) pair reads its expert's weights directly by id (no sort, no host sync), streaming
rows with wide loads along the contraction dim and float32 multiply-adds on CUDA cores (M is ~1:
tensor cores would idle). Pairs that share an expert re-read it; launching the pairs of one
weight tile side by side (pairs vary fastest in the grid) makes those re-reads L2 hits.

  _gate_up_kernel  grid (T*k pairs, I / BLOCK_I): h[p] = silu(x[t] W_gate[e]^T) * (x[t] W_up[e]^T)
                   (gate and up rows of one tile loaded together; SiLU-and-multiply in the epilogue)
  _down_kernel     grid (T, H / BLOCK_H, SPLIT): out[t] = sum_j w[t, j] * h[t*k + j] W2[e_j]^T,
                   one loop over the token's pairs (deterministic, no atomics); SPLIT > 1 spreads
                   the pairs over programs (more programs when T is tiny) into float32 partials
                   that `_sum_splits_kernel` adds and rounds.
Configs: `choose_config(num_tokens)` = `TUNED` (measured, by token count) or a heuristic;
`scratch/bench_fused_moe.py` prints entries to paste into `TUNED`. Shapes alone pick the config,
so the kernels capture into CUDA graphs.

Contract: fused_moe(x (T, H), w13 (E, 2I, H) [gate | up], w2 (E, H, I), weights (T, k) float32,
ids (T, k)) == FusedExperts' "loop" path: sum_j weights[t, j] * expert_{ids[t, j]}(x[t]), with
float32 accumulation; gate, up and h are rounded to x's dtype as the loop path rounds them, the
weighted sum over the k experts is rounded once (the loop path rounds each term).
route_greedy_triton(logits (T, E) float32, ...) == MoEGate's greedy routing after its GEMM (softmax or
sigmoid, top-k, gather, normalize, scale): one kernel instead of five to eight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_PAIRS = 96  # H200 sweep: the kernels beat grouped_mm up to 16 tokens x top-6, not at 32; T * top_k up to this runs here; larger (prefill) is torch._grouped_mm's business


@dataclass(frozen=True)
class FusedMoEConfig:
    block_i: int = 16  # gate_up: rows of I per program (gate and up tiles each BLOCK_I x BLOCK_K_UP)
    block_k_up: int = 256  # gate_up: columns of H per loop step
    block_h: int = 16  # down: rows of W2 (outputs) per program
    block_k_down: int = 128  # down: columns of I per loop step
    split: int = 1  # down: programs sharing one token's pairs (> 1: float32 partials + a sum); a divisor of k
    num_warps_up: int = 4
    num_warps_down: int = 4
    num_stages: int = 3


# Measured winners by token count (V2-Lite shapes, H100/H200); scratch/bench_fused_moe.py prints
# lines to paste here. A token count not listed uses the next larger entry, else `choose_config`.
TUNED: dict[int, FusedMoEConfig] = {  # scratch/bench_fused_moe.py --sweep on an NVIDIA H200 (V2-Lite shapes)
    1: FusedMoEConfig(block_i=32, block_k_up=256, block_h=16, block_k_down=256, split=6, num_warps_up=8, num_warps_down=4, num_stages=3),  # 31.2 us/layer, 3324 GB/s
    2: FusedMoEConfig(block_i=8, block_k_up=128, block_h=16, block_k_down=256, split=3, num_warps_up=8, num_warps_down=4, num_stages=3),  # 52.6 us/layer, 3806 GB/s
    4: FusedMoEConfig(block_i=8, block_k_up=128, block_h=16, block_k_down=256, split=2, num_warps_up=8, num_warps_down=4, num_stages=3),  # 90.9 us/layer, 3946 GB/s
    8: FusedMoEConfig(block_i=8, block_k_up=128, block_h=16, block_k_down=256, split=1, num_warps_up=8, num_warps_down=4, num_stages=3),  # 155.9 us/layer, 3787 GB/s
    16: FusedMoEConfig(block_i=32, block_k_up=128, block_h=16, block_k_down=256, split=1, num_warps_up=8, num_warps_down=4, num_stages=3),  # 275.3 us/layer, 3154 GB/s
}


def choose_config(num_tokens: int, top_k: int = 6) -> FusedMoEConfig:
    """TUNED, else: split the k pairs over programs when a token alone would leave SMs idle."""
    for tokens in sorted(TUNED):
        if num_tokens <= tokens:
            return TUNED[tokens]
    split = top_k if num_tokens == 1 else (2 if num_tokens <= 4 else 1)
    return FusedMoEConfig(split=max(1, min(split, top_k)))


@triton.jit
def _gate_up_kernel(
    x_ptr, w13_ptr, ids_ptr, h_ptr, stride_x, stride_we,
    HIDDEN: tl.constexpr, INTER: tl.constexpr, TOP_K: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_I: tl.constexpr, EVEN_K: tl.constexpr,
):
    pair = tl.program_id(0)
    tile = tl.program_id(1)
    token = pair // TOP_K
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    rows = tile * BLOCK_I + tl.arange(0, BLOCK_I)
    cols = tl.arange(0, BLOCK_K)
    row_mask = rows < INTER
    gate_rows = w13_ptr + expert * stride_we + rows[:, None] * HIDDEN  # (BLOCK_I, 1)
    up_rows = gate_rows + INTER * HIDDEN
    x_row = x_ptr + token * stride_x
    acc_gate = tl.zeros((BLOCK_I, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_I, BLOCK_K), dtype=tl.float32)
    for k in range(0, (HIDDEN + BLOCK_K - 1) // BLOCK_K):  # model shapes are constexpr: static trip counts
        c = k * BLOCK_K + cols
        if EVEN_I and EVEN_K:
            xv = tl.load(x_row + c)
            g = tl.load(gate_rows + c[None, :])
            u = tl.load(up_rows + c[None, :])
        else:
            mask = row_mask[:, None] & (c < HIDDEN)[None, :]
            xv = tl.load(x_row + c, mask=c < HIDDEN, other=0.0)
            g = tl.load(gate_rows + c[None, :], mask=mask, other=0.0)
            u = tl.load(up_rows + c[None, :], mask=mask, other=0.0)
        xf = xv.to(tl.float32)[None, :]
        acc_gate += g.to(tl.float32) * xf
        acc_up += u.to(tl.float32) * xf
    dtype = h_ptr.dtype.element_ty
    gate = tl.sum(acc_gate, 1).to(dtype).to(tl.float32)  # the loop path's GEMM output is in x's dtype
    up = tl.sum(acc_up, 1).to(dtype).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(dtype)  # F.silu rounds, then * up (layers.silu_and_mul)
    h = (silu.to(tl.float32) * up).to(dtype)
    tl.store(h_ptr + pair * INTER + rows, h, mask=row_mask)


@triton.jit
def _down_kernel(
    h_ptr, w2_ptr, ids_ptr, weights_ptr, out_ptr, stride_op, stride_ot, stride_we,
    HIDDEN: tl.constexpr, INTER: tl.constexpr, TOP_K: tl.constexpr, PAIRS_PER_SPLIT: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_H: tl.constexpr, EVEN_K: tl.constexpr,
):
    token = tl.program_id(0)
    tile = tl.program_id(1)
    split = tl.program_id(2)
    rows = tile * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_K)
    row_mask = rows < HIDDEN
    K_STEPS: tl.constexpr = (INTER + BLOCK_K - 1) // BLOCK_K
    first = token * TOP_K + split * PAIRS_PER_SPLIT  # this program's pairs: first .. first + PAIRS_PER_SPLIT - 1
    acc = tl.zeros((BLOCK_H, BLOCK_K), dtype=tl.float32)
    for step in range(0, PAIRS_PER_SPLIT * K_STEPS):  # one flat loop over (pair, I block)
        pair = first + step // K_STEPS
        c = (step % K_STEPS) * BLOCK_K + cols
        expert = tl.load(ids_ptr + pair).to(tl.int64)
        weight = tl.load(weights_ptr + pair)
        w_rows = w2_ptr + expert * stride_we + rows[:, None] * INTER
        if EVEN_H and EVEN_K:
            hv = tl.load(h_ptr + pair * INTER + c)
            w = tl.load(w_rows + c[None, :])
        else:
            hv = tl.load(h_ptr + pair * INTER + c, mask=c < INTER, other=0.0)
            w = tl.load(w_rows + c[None, :], mask=row_mask[:, None] & (c < INTER)[None, :], other=0.0)
        acc += w.to(tl.float32) * (hv.to(tl.float32) * weight)[None, :]
    y = tl.sum(acc, 1)
    tl.store(out_ptr + split * stride_op + token * stride_ot + rows, y.to(out_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _sum_splits_kernel(partials_ptr, out_ptr, stride_split, hidden, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """out (T, H) = sum over SPLIT of float32 partials (SPLIT, T, H), rounded once (torch.sum(out=bf16) rounds
    each partial first)."""
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        acc += tl.load(partials_ptr + s * stride_split + token * hidden + cols, mask=mask, other=0.0)
    tl.store(out_ptr + token * hidden + cols, acc.to(out_ptr.dtype.element_ty), mask=mask)


def fused_moe(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
    config: FusedMoEConfig | None = None,
) -> torch.Tensor:
    cfg = config or choose_config(x.shape[0], ids.shape[1])
    ids = ids.contiguous()
    return expert_down(expert_gate_up(x, w13, ids, cfg), w2, weights, ids, cfg)


def expert_gate_up(x: torch.Tensor, w13: torch.Tensor, ids: torch.Tensor, cfg: FusedMoEConfig) -> torch.Tensor:
    """x (T, H), w13 (E, 2I, H), ids (T, k) contiguous -> h (T*k, I) in x's dtype; pair t*k + j = (t, ids[t, j])."""
    num_tokens, hidden = x.shape
    top_k = ids.shape[1]
    inter = w13.shape[1] // 2
    assert w13.shape[2] == hidden and w13.is_contiguous() and ids.is_contiguous()
    if x.stride(-1) != 1:
        x = x.contiguous()
    h = torch.empty(num_tokens * top_k, inter, dtype=x.dtype, device=x.device)
    if num_tokens:
        _gate_up_kernel[(num_tokens * top_k, triton.cdiv(inter, cfg.block_i))](
            x, w13, ids, h, x.stride(0), w13.stride(0),
            HIDDEN=hidden, INTER=inter, TOP_K=top_k, BLOCK_I=cfg.block_i, BLOCK_K=cfg.block_k_up,
            EVEN_I=inter % cfg.block_i == 0, EVEN_K=hidden % cfg.block_k_up == 0,
            num_warps=cfg.num_warps_up, num_stages=cfg.num_stages,
        )
    return h


def expert_down(
    h: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, cfg: FusedMoEConfig,
) -> torch.Tensor:
    """h (T*k, I), w2 (E, H, I), weights (T, k), ids (T, k) contiguous
    -> out (T, H) = sum_j weights[t, j] * h[t*k + j] W2[ids[t, j]]^T."""
    num_tokens, top_k = ids.shape
    hidden, inter = w2.shape[1], w2.shape[2]
    assert w2.is_contiguous() and ids.is_contiguous() and h.shape == (num_tokens * top_k, inter)
    weights = weights.to(torch.float32).contiguous()
    out = torch.empty(num_tokens, hidden, dtype=h.dtype, device=h.device)
    if not num_tokens:
        return out
    split = max(s for s in range(1, top_k + 1) if top_k % s == 0 and s <= max(1, cfg.split))  # equal shares
    partials = out if split == 1 else torch.empty(split, num_tokens, hidden, dtype=torch.float32, device=h.device)
    _down_kernel[(num_tokens, triton.cdiv(hidden, cfg.block_h), split)](
        h, w2, ids, weights, partials, partials.stride(0) if split > 1 else 0, hidden, w2.stride(0),
        HIDDEN=hidden, INTER=inter, TOP_K=top_k, PAIRS_PER_SPLIT=top_k // split,
        BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k_down,
        EVEN_H=hidden % cfg.block_h == 0, EVEN_K=inter % cfg.block_k_down == 0,
        num_warps=cfg.num_warps_down, num_stages=cfg.num_stages,
    )
    if split > 1:
        block = 1024
        _sum_splits_kernel[(num_tokens, triton.cdiv(hidden, block))](
            partials, out, partials.stride(0), hidden, SPLIT=split, BLOCK=block, num_warps=4,
        )
    return out


@triton.jit
def _route_greedy_kernel(
    logits_ptr, weights_ptr, ids_ptr, num_experts, scale,
    TOP_K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, SIGMOID: tl.constexpr, NORM: tl.constexpr,
):
    token = tl.program_id(0)
    e = tl.arange(0, BLOCK_E)
    valid = e < num_experts
    z = tl.load(logits_ptr + token * num_experts + e, mask=valid, other=float("-inf"))
    if SIGMOID:
        scores = 1.0 / (1.0 + tl.exp(-z))
    else:
        p = tl.exp(z - tl.max(z, 0))
        scores = p / tl.sum(p, 0)
    scores = tl.where(valid, scores, -1.0)  # scores lie in [0, 1]: padding never wins
    j = tl.arange(0, BLOCK_K)
    top_w = tl.zeros((BLOCK_K,), dtype=tl.float32)
    top_id = tl.zeros((BLOCK_K,), dtype=tl.int64)
    for i in tl.static_range(TOP_K):  # k rounds of argmax, largest first (topk's order); ties: lowest id
        best = tl.max(scores, 0)
        best_id = tl.min(tl.where(scores == best, e, BLOCK_E), 0)
        top_w = tl.where(j == i, best, top_w)
        top_id = tl.where(j == i, best_id.to(tl.int64), top_id)
        scores = tl.where(e == best_id, -2.0, scores)
    if NORM:
        top_w = top_w / (tl.sum(top_w, 0) + 1e-20)
    tl.store(weights_ptr + token * TOP_K + j, top_w * scale, mask=j < TOP_K)
    tl.store(ids_ptr + token * TOP_K + j, top_id, mask=j < TOP_K)


def route_greedy_triton(
    logits: torch.Tensor, top_k: int, sigmoid: bool, norm_topk_prob: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoEGate's greedy routing after the router GEMM, one kernel: logits (T, E) float32 ->
    (weights (T, k) float32, ids (T, k) int64) == softmax/sigmoid, topk, gather, normalize, scale."""
    num_tokens, num_experts = logits.shape
    logits = logits.float().contiguous()
    weights = torch.empty(num_tokens, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(num_tokens, top_k, dtype=torch.int64, device=logits.device)
    if num_tokens:
        _route_greedy_kernel[(num_tokens,)](
            logits, weights, ids, num_experts, float(scale),
            TOP_K=top_k, BLOCK_E=triton.next_power_of_2(num_experts), BLOCK_K=max(2, triton.next_power_of_2(top_k)),
            SIGMOID=sigmoid, NORM=norm_topk_prob, num_warps=1 if num_experts <= 64 else 2,
        )
    return weights, ids
