"""Expert load under the stated routing assumptions: hand-computed expectations and the sampler's exactness."""
from __future__ import annotations

import numpy as np
import pytest

from lab.studies.deepseek_v3_full.routing import (RoutingAssumption, expected_load, inclusion_probabilities,
                                                  measured_load, sample_expert_ids)


def test_uniform_load_by_hand() -> None:
    load = expected_load(RoutingAssumption("uniform"), tokens=2, num_experts=4, top_k=2)
    # each expert with p = 1/2: 4 rows, 4 * (1 - 1/4) = 3 active, busiest 2 * 1/2 = 1 row, imbalance 1
    assert (load.expert_rows, load.active_experts, load.busiest_expert_rows, load.imbalance) == (4, 3, 1, 1)


def test_zipf_probabilities_by_hand_with_the_cap() -> None:
    # s = 1 over 4 experts, k = 2: weights 1, 1/2, 1/3, 1/4 (sum 25/12) -> 24/25 ... first 0.96 <= 1, no cap
    p = np.sort(inclusion_probabilities(RoutingAssumption("zipf", 1.0), 4, 2))[::-1]
    assert p == pytest.approx([24 / 25, 12 / 25, 8 / 25, 6 / 25])
    # s = 2, k = 2: weights 1, 1/4, 1/9, 1/16 scale past 1 -> the hottest capped at 1, the rest share 1 as 1/4:1/9:1/16
    p = np.sort(inclusion_probabilities(RoutingAssumption("zipf", 2.0), 4, 2))[::-1]
    rest = np.array([1 / 4, 1 / 9, 1 / 16])
    assert p == pytest.approx([1.0, *(rest / rest.sum())])
    load = expected_load(RoutingAssumption("zipf", 2.0), tokens=3, num_experts=4, top_k=2)
    assert load.busiest_expert_rows == pytest.approx(3.0) and load.imbalance == pytest.approx(2.0)  # 1 / (2/4)


def test_sampler_picks_k_distinct_experts_with_the_stated_probabilities() -> None:
    a = RoutingAssumption("zipf", 1.2, seed=3)
    ids = sample_expert_ids(a, 20000, 16, 4, np.random.default_rng(0))
    assert ids.shape == (20000, 4)
    assert all(len(set(row)) == 4 for row in ids[:500])
    freq = np.bincount(ids.reshape(-1), minlength=16) / 20000
    assert freq == pytest.approx(inclusion_probabilities(a, 16, 4), abs=0.015)
    load = measured_load(ids[:1], 16)
    assert (load.expert_rows, load.active_experts, load.busiest_expert_rows) == (4, 4, 1)


def test_bad_assumptions_are_named() -> None:
    with pytest.raises(ValueError, match="routing must be one of"):
        RoutingAssumption("hot")
    with pytest.raises(ValueError, match="top_k must be in"):
        inclusion_probabilities(RoutingAssumption(), 4, 5)
