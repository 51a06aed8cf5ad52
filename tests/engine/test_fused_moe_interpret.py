"""The fused-MoE Triton kernels equal FusedExperts' "loop" path, in Triton's CPU interpreter.

Small float32 shapes; experts repeat across tokens (and are shared by several pairs), hidden and
intermediate sizes are not multiples of the tiles in some cases (the masked paths), and the
down projection runs with and without splitting a token's pairs over programs.
"""
from __future__ import annotations

from tests.engine.triton_interpret import DEVICE  # noqa: I001  (first: sets TRITON_INTERPRET without CUDA)

import pytest
import torch

from lab.engine.kernels.fused_moe import FusedMoEConfig, choose_config, fused_moe
from lab.engine.models.moe import FusedExperts

NUM_EXPERTS = 8
SMALL = FusedMoEConfig(block_i=16, block_k_up=32, block_h=16, block_k_down=16, split=1)


def _experts(hidden: int, inter: int, seed: int = 0) -> FusedExperts:
    torch.manual_seed(seed)
    experts = FusedExperts(NUM_EXPERTS, hidden, inter).to(DEVICE)
    experts.w13.data.normal_(0.0, hidden**-0.5)
    experts.w2.data.normal_(0.0, inter**-0.5)
    return experts


def _routing(num_tokens: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(num_tokens, 64, device=DEVICE)
    ids = torch.stack([torch.randperm(NUM_EXPERTS)[:top_k] for _ in range(num_tokens)]).to(DEVICE)
    ids[num_tokens // 2 :, 0] = 3  # several tokens share expert 3
    weights = torch.rand(num_tokens, top_k, device=DEVICE).softmax(-1)
    return x, weights, ids


@pytest.mark.parametrize("num_tokens,top_k", [(1, 2), (3, 3), (5, 2)])
@pytest.mark.parametrize("split", [1, 3])  # k=2: 2 splits of 1 pair; k=3: 3 splits
def test_fused_moe_equals_loop(num_tokens, top_k, split) -> None:
    experts = _experts(64, 48)
    x, weights, ids = _routing(num_tokens, top_k)
    want = experts(x, weights, ids)  # backend "loop"
    cfg = FusedMoEConfig(block_i=16, block_k_up=32, block_h=16, block_k_down=16, split=split)
    got = fused_moe(x, experts.w13, experts.w2, weights, ids, cfg)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_masked_tiles_equal_loop() -> None:
    """H = 40 and I = 24 fit no tile evenly: every load takes its masked branch."""
    torch.manual_seed(1)
    experts = FusedExperts(NUM_EXPERTS, 40, 24).to(DEVICE)
    experts.w13.data.normal_(0.0, 0.2)
    experts.w2.data.normal_(0.0, 0.2)
    x = torch.randn(3, 40, device=DEVICE)
    ids = torch.tensor([[1, 5], [5, 1], [7, 5]], device=DEVICE)
    weights = torch.rand(3, 2, device=DEVICE)
    cfg = FusedMoEConfig(block_i=16, block_k_up=32, block_h=16, block_k_down=16, split=2)
    torch.testing.assert_close(fused_moe(x, experts.w13, experts.w2, weights, ids, cfg),
                               experts(x, weights, ids), atol=1e-5, rtol=1e-5)


def test_triton_backend_routes_small_calls_to_the_kernels(monkeypatch) -> None:
    """FusedExperts "triton": decode-sized calls run fused_moe, larger ones fall back (here "grouped")."""
    from lab.engine.kernels import fused_moe as module

    experts = _experts(64, 48)
    x, weights, ids = _routing(4, 2)
    want = experts(x, weights, ids)
    experts.backend = "triton"
    calls = []
    monkeypatch.setattr(module, "fused_moe", lambda *a, **kw: calls.append(1) or fused_moe(*a, config=SMALL))
    torch.testing.assert_close(experts(x, weights, ids), want, atol=1e-5, rtol=1e-5)
    assert calls == [1]
    monkeypatch.setattr(module, "MAX_PAIRS", 4)  # 8 pairs: too many for the kernels now
    torch.testing.assert_close(experts(x, weights, ids), want, atol=1e-5, rtol=1e-5)
    assert calls == [1]


def test_choose_config_prefers_tuned_then_splits_pairs_only_for_tiny_batches(monkeypatch) -> None:
    from lab.engine.kernels import fused_moe as module

    monkeypatch.setattr(module, "TUNED", {})
    assert [choose_config(t, 6).split for t in (1, 4, 32)] == [6, 2, 1]
    monkeypatch.setattr(module, "TUNED", {2: SMALL, 8: FusedMoEConfig(block_i=8)})
    assert choose_config(1) is SMALL and choose_config(2) is SMALL
    assert choose_config(5).block_i == 8 and choose_config(9).split == 1  # past the table: the heuristic


@pytest.mark.parametrize("scoring,norm,scale", [("softmax", False, 1.0), ("softmax", True, 2.5),
                                                ("sigmoid", True, 1.0)])
def test_route_greedy_equals_gate(scoring, norm, scale) -> None:
    from types import SimpleNamespace

    from lab.engine.models.moe import MoEGate

    config = SimpleNamespace(n_routed_experts=24, hidden_size=32, num_experts_per_tok=6, n_group=1, topk_group=1,
                             topk_method="greedy", scoring_func=scoring, norm_topk_prob=norm,
                             routed_scaling_factor=scale)
    torch.manual_seed(2)
    gate = MoEGate(config).to(DEVICE)
    gate.weight.data.normal_()
    x = torch.randn(5, 32, device=DEVICE)
    want_w, want_ids = gate(x)
    gate.fused = True
    got_w, got_ids = gate(x)
    assert torch.equal(got_ids, want_ids) and got_ids.dtype == torch.int64
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-5)
