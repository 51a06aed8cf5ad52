"""DeepSeek mixture of experts: a top-k router, routed SwiGLU experts, always-on shared experts.

Contract: `DeepseekMoE(config)(x (T, H)) -> (T, H)` = sum_k w_k * expert_{id_k}(x) + shared(x).
Routing (`MoEGate`, float32, as transformers' DeepseekV2/V3 routers):
  scores = softmax(logits) (V2) or sigmoid(logits) (V3)
  greedy: top-k of scores.
  group_limited_greedy (V2): keep the topk_group groups with the largest max score, top-k inside.
  noaux_tc (V3): choice = scores + e_score_correction_bias; a group scores the sum of its top-2
    choices; keep topk_group groups; top-k of choice; the weights come from the unbiased scores.
  norm_topk_prob: weights / their sum; then x routed_scaling_factor.
transformers' DeepseekV2 router ignores norm_topk_prob; released V2 checkpoints set it False, and
here True normalizes, as DeepSeek's own V2 code and vLLM do. With `fused` (set by `set_fused_ops`),
the router GEMM of one token is the skinny-GEMM kernel (`kernels/gemv.py`, float32 weight and sums),
and greedy routing after it one Triton kernel (`fused_moe.route_greedy_triton`).
Experts are stacked (E, 2I, H) / (E, H, I). Three ways to run them
(`FusedExperts.backend`, set for the whole model by `set_moe_backend`):
  "loop"    (the plain path, the oracle): each expert with tokens runs one GEMM on its slice; the
            per-expert counts come to the host (`.tolist()`), one sync per layer, so no CUDA graph.
  "grouped" one `torch._grouped_mm` per projection over all experts, group ends found on the device
            (`searchsorted`): no host sync and no Python loop, so decode can be graph-captured, and
            only experts that received tokens have their weights read.
  "triton"  decode-sized calls (T * k <= fused_moe.MAX_PAIRS) run two Triton kernels that read each
            selected expert by id (`kernels/fused_moe.py`: no sort, no host sync, SiLU-mul and the
            weighted combine fused); larger calls (prefill) run "grouped" where grouped_mm runs
            (CPU, Hopper+), else "loop" - or the Triton kernels while a CUDA graph is being
            captured, so decode graphs work on pre-Hopper cards too.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from lab.engine.model_config import ModelConfig
from lab.engine.models.layers import GatedMLP, silu_and_mul, takes_gemv


class MoEGate(nn.Module):
    fp32_params = ("weight", "e_score_correction_bias")  # routing stays float32 in any model dtype

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.topk_method, self.scoring_func = config.topk_method, config.scoring_func
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size, dtype=torch.float32))
        if self.topk_method == "noaux_tc":
            self.e_score_correction_bias = nn.Parameter(torch.zeros(self.num_experts, dtype=torch.float32))
        else:
            self.e_score_correction_bias = None
        self.fused = False  # greedy routing after the GEMM as one Triton kernel (`set_fused_ops`)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, H) -> (weights (T, k) float32, expert ids (T, k) int64)."""
        if self.fused and takes_gemv(x, self.weight, 1, weight_dtype=torch.float32):  # M >= 2: cuBLAS is faster
            from lab.engine.kernels.gemv import gemv  # CUDA only; never imported on CPU

            # the fp32 weight read as it is, x upcast in registers, float32 products and sums: F.linear's
            # numbers in one launch, instead of a cast of x and cuBLAS's two-kernel fp32 GEMV (~4 us a layer)
            logits = gemv(x, self.weight, out_dtype=torch.float32)
        else:
            logits = F.linear(x.float(), self.weight.float())  # (T, E)
        if self.fused and self.topk_method == "greedy":
            from lab.engine.kernels.fused_moe import route_greedy_triton  # CUDA only; never imported on CPU

            return route_greedy_triton(logits, self.top_k, self.scoring_func == "sigmoid", self.norm_topk_prob,
                                       self.routed_scaling_factor)
        scores = logits.sigmoid() if self.scoring_func == "sigmoid" else logits.softmax(dim=-1)
        choice = scores
        if self.topk_method != "greedy":
            grouped = scores.view(-1, self.n_group, self.num_experts // self.n_group)  # (T, G, E/G)
            if self.topk_method == "noaux_tc":
                choice = scores + self.e_score_correction_bias
                grouped = choice.view_as(grouped)
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (T, G)
            else:
                group_scores = grouped.amax(dim=-1)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(self.topk_group, dim=-1).indices, True)
            keep = keep.repeat_interleave(self.num_experts // self.n_group, dim=1)  # (T, E)
            choice = choice.masked_fill(~keep, float("-inf"))
        ids = choice.topk(self.top_k, dim=-1).indices  # (T, k)
        weights = scores.gather(1, ids)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, ids


MOE_BACKENDS = ("loop", "grouped", "triton")


@functools.lru_cache(maxsize=None)
def grouped_mm_runs(device: torch.device) -> bool:
    """torch._grouped_mm has kernels on the CPU and on Hopper+ (sm90) GPUs."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device)[0] >= 9


class FusedExperts(nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.backend = "loop"
        self.fused = False  # SiLU-and-multiply as one Triton kernel (models/layers.py)
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))  # [gate | up]
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            return self._triton(x, weights, ids)
        if self.backend == "grouped":
            return self._grouped(x, weights, ids)
        return self._loop(x, weights, ids)

    def _triton(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        from lab.engine.kernels import fused_moe  # CUDA (or Triton's interpreter) only; never imported otherwise

        if ids.numel() <= fused_moe.MAX_PAIRS:
            return fused_moe.fused_moe(x, self.w13, self.w2, weights, ids)
        device = torch.device(x.device.type, x.device.index or 0) if x.is_cuda else x.device
        if grouped_mm_runs(device):
            return self._grouped(x, weights, ids)
        if x.is_cuda and torch.cuda.is_current_stream_capturing():  # the loop syncs; slower here, but capturable
            return fused_moe.fused_moe(x, self.w13, self.w2, weights, ids)
        return self._loop(x, weights, ids)

    def _loop(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        num_tokens, top_k = ids.shape
        flat_ids = ids.reshape(-1)  # (T*k,)
        order = torch.argsort(flat_ids, stable=True)
        token_of = order // top_k  # source token of each expert-sorted slot
        counts = torch.bincount(flat_ids, minlength=self.num_experts).tolist()  # one host sync per layer
        xs = x.index_select(0, token_of)  # (T*k, H), grouped by expert
        ys = torch.empty_like(xs)
        start = 0
        for e, n in enumerate(counts):
            if n:
                seg = slice(start, start + n)
                ys[seg] = F.linear(silu_and_mul(F.linear(xs[seg], self.w13[e])), self.w2[e])
                start += n
        ys = (ys.float() * weights.reshape(-1)[order, None]).to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, ys)

    def _grouped(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        top_k = ids.shape[1]
        flat_ids = ids.reshape(-1)  # (T*k,)
        order = torch.argsort(flat_ids, stable=True)
        token_of = order // top_k
        experts = torch.arange(self.num_experts, device=x.device, dtype=flat_ids.dtype)
        ends = torch.searchsorted(flat_ids[order], experts, right=True).to(torch.int32)  # (E,) group ends, on device
        xs = x.index_select(0, token_of)  # (T*k, H), grouped by expert
        h = torch._grouped_mm(xs, self.w13.transpose(-2, -1), offs=ends)  # (T*k, 2I)
        ys = torch._grouped_mm(silu_and_mul(h, self.fused), self.w2.transpose(-2, -1), offs=ends)  # (T*k, H)
        ys = (ys.float() * weights.reshape(-1)[order, None]).to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, ys)

    def weight_targets(self, prefix: str) -> dict[str, tuple[str, tuple]]:
        """HF stores each expert as `{prefix}.{e}.{gate,up,down}_proj.weight`."""
        i = self.intermediate_size
        targets = {}
        for e in range(self.num_experts):
            targets[f"{prefix}.{e}.gate_proj.weight"] = (f"{prefix}.w13", (e, slice(0, i)))
            targets[f"{prefix}.{e}.up_proj.weight"] = (f"{prefix}.w13", (e, slice(i, 2 * i)))
            targets[f"{prefix}.{e}.down_proj.weight"] = (f"{prefix}.w2", (e,))
        return targets


class DeepseekMoE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = MoEGate(config)
        self.experts = FusedExperts(config.n_routed_experts, config.hidden_size, config.moe_intermediate_size)
        shared = config.moe_intermediate_size * config.n_shared_experts
        self.shared_experts = GatedMLP(config.hidden_size, shared, bias=config.mlp_bias) if shared else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.gate(x)
        out = self.experts(x, weights, ids)
        return out + self.shared_experts(x) if self.shared_experts is not None else out


def set_moe_backend(model: nn.Module, backend: str) -> None:
    """Choose "loop" (the oracle), "grouped" or "triton" for every `FusedExperts` of `model`."""
    if backend not in MOE_BACKENDS:
        raise ValueError(f"MoE backend must be one of {MOE_BACKENDS}, got {backend!r}")
    for module in model.modules():
        if isinstance(module, FusedExperts):
            module.backend = backend
