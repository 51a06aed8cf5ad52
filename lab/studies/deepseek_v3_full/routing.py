"""Which experts a step's tokens reach, under a stated routing assumption, and the expert load that follows.

Contract: a `RoutingAssumption` says how likely each of `num_experts` experts is to be among a token's `top_k`:
- "uniform": every expert with probability k / E (a balanced router: what DeepSeek's bias-based balancing
  aims for over a long window);
- "zipf": expert of popularity rank r (1 = hottest) with weight 1 / r**s, scaled so the probabilities sum to k
  and capped at 1 (the excess handed to the others in proportion, until none exceeds 1): a skewed router, as
  short windows of real traffic show. Which expert is hot is fixed by `seed` (a random rank order).
`inclusion_probabilities(a, E, k)` returns those per-token probabilities (they sum to k). `sample_expert_ids(a,
tokens, E, k, rng)` draws each token's k distinct experts with exactly these probabilities (systematic sampling
over a fresh random order of the experts per token: with every probability <= 1 the k points land in k different
experts). `expected_load(a, tokens, E, k)` is the arithmetic: k * tokens rows in all (every token reaches exactly
k experts), sum_e 1 - (1 - p_e)**tokens experts expected to receive a token (tokens route independently), the
busiest expert's expected rows tokens * max p_e, and the imbalance max p_e / mean p_e.
The study feeds these ids to the expert GEMMs instead of the dummy-weight router's choice (random weights route
near-uniformly but not by any stated rule); the router itself is still timed. Torch-free (numpy only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUTINGS = ("uniform", "zipf")


@dataclass(frozen=True)
class RoutingAssumption:
    kind: str = "uniform"
    zipf_exponent: float = 1.0  # s in 1 / rank**s; only for "zipf"
    seed: int = 0  # which experts are the hot ones (zipf) and the draws

    def __post_init__(self) -> None:
        if self.kind not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.kind!r}")
        if self.kind == "zipf" and self.zipf_exponent <= 0:
            raise ValueError(f"a Zipf exponent must be > 0, got {self.zipf_exponent}")

    def describe(self) -> str:
        if self.kind == "uniform":
            return "uniform: each token picks top_k distinct experts, each expert with probability top_k / experts"
        return (f"zipf(s={self.zipf_exponent:g}): expert of popularity rank r picked with probability proportional "
                f"to 1/r^{self.zipf_exponent:g}, scaled to sum to top_k and capped at 1; rank order seeded {self.seed}")


def _capped(weights: np.ndarray, total: float) -> np.ndarray:
    """Scale `weights` to sum to `total` with no entry above 1, the excess spread in proportion over the rest."""
    p = np.zeros_like(weights)
    free = np.ones(len(weights), dtype=bool)
    budget = total
    while True:
        p[free] = weights[free] * budget / weights[free].sum()
        over = free & (p > 1)
        if not over.any():
            return p
        p[over] = 1.0
        free &= ~over
        budget = total - (~free).sum()


def inclusion_probabilities(a: RoutingAssumption, num_experts: int, top_k: int) -> np.ndarray:
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in 1..{num_experts} experts, got {top_k}")
    if a.kind == "uniform":
        return np.full(num_experts, top_k / num_experts)
    ranks = np.random.default_rng(a.seed).permutation(num_experts) + 1  # expert e has popularity rank ranks[e]
    return _capped(1.0 / ranks.astype(float) ** a.zipf_exponent, float(top_k))


def sample_expert_ids(a: RoutingAssumption, tokens: int, num_experts: int, top_k: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(tokens, top_k) int64 expert ids, distinct per row, each expert included with its probability."""
    p = inclusion_probabilities(a, num_experts, top_k)
    order = np.argsort(rng.random((tokens, num_experts)), axis=1)  # a fresh random order per token
    ends = np.cumsum(p[order], axis=1)  # (tokens, E): where each expert's interval ends on [0, k]
    points = rng.random((tokens, 1)) + np.arange(top_k)  # u, u+1, ..., u+k-1
    slot = np.stack([np.searchsorted(row, pts, side="right") for row, pts in zip(ends, points)])
    slot = np.minimum(slot, num_experts - 1)  # guards a point equal to the float sum's last end
    return np.take_along_axis(order, slot, axis=1).astype(np.int64)


@dataclass(frozen=True)
class ExpertLoad:
    expert_rows: float  # token-expert pairs the layer's experts process
    active_experts: float  # expected experts with at least one token
    busiest_expert_rows: float  # expected rows of the most likely expert
    imbalance: float  # busiest expert's load over the mean expert's


def expected_load(a: RoutingAssumption, tokens: int, num_experts: int, top_k: int) -> ExpertLoad:
    p = inclusion_probabilities(a, num_experts, top_k)
    return ExpertLoad(float(tokens * top_k), float((1 - (1 - p) ** tokens).sum()), float(tokens * p.max()),
                      float(p.max() / p.mean()))


def measured_load(ids: np.ndarray, num_experts: int) -> ExpertLoad:
    """The same four numbers counted on drawn ids (what one timed step really ran)."""
    counts = np.bincount(ids.reshape(-1), minlength=num_experts)
    return ExpertLoad(float(counts.sum()), float((counts > 0).sum()), float(counts.max()),
                      float(counts.max() / counts.mean()))
