"""lab.engine.fidelity on hand-checkable cases: every number below is computed by hand in the comments."""
from __future__ import annotations

import math

import pytest
import torch

from lab.engine.fidelity import FidelityReport, greedy_agreement, kl_divergence, logits_cosine, weight_errors


def test_weight_errors_are_relative_frobenius_norms() -> None:
    ref = {"a": torch.tensor([[3.0, 4.0]]), "z": torch.zeros(2)}
    quant = {"a": torch.tensor([[3.0, 4.5]]), "z": torch.zeros(2)}
    errors = weight_errors(quant, ref)
    assert errors["a"] == pytest.approx(0.5 / 5.0)  # ||(0, 0.5)|| / ||(3, 4)||
    assert errors["z"] == 0.0
    assert weight_errors({"z": torch.ones(2)}, {"z": torch.zeros(2)})["z"] == math.inf
    with pytest.raises(ValueError, match=r"one model only: \['b'\]"):
        weight_errors({"a": ref["a"], "b": ref["a"]}, {"a": ref["a"]})
    with pytest.raises(ValueError, match="a: quantized"):
        weight_errors({"a": torch.ones(2)}, {"a": torch.ones(3)})


def test_cosine_of_orthogonal_parallel_and_opposite_rows() -> None:
    ref = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 1.0]])
    quant = torch.tensor([[0.0, 3.0], [2.0, 4.0], [-1.0, -1.0]])
    assert logits_cosine(ref, quant).tolist() == pytest.approx([0.0, 1.0, -1.0])


def test_kl_is_zero_for_equal_logits_and_matches_the_two_outcome_formula() -> None:
    ref = torch.tensor([[0.0, 0.0], [5.0, 1.0]])
    assert kl_divergence(ref, ref + 7.0).tolist() == [0.0, 0.0]  # softmax ignores a constant shift
    quant = torch.tensor([[math.log(3.0), 0.0]])  # P = (1/2, 1/2), Q = (3/4, 1/4)
    want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence(ref[:1], quant).item() == pytest.approx(want)
    assert kl_divergence(quant, ref[:1]).item() != pytest.approx(want)  # KL is not symmetric: the order matters


def test_greedy_agreement_counts_positions_and_first_divergences() -> None:
    agree = greedy_agreement([[1, 2, 3, 4], [5, 6], [7]], [[1, 2, 9, 4], [5, 6], [8, 0]])
    assert agree.token_match == pytest.approx((3 + 2 + 0) / (4 + 2 + 1))
    assert agree.first_divergence == [2, None, 0]
    assert agree.exact_prompts == 1 and agree.num_prompts == 3
    with pytest.raises(ValueError, match="2 reference sequences vs 1"):
        greedy_agreement([[1], [2]], [[1]])


def test_report_gathers_the_numbers() -> None:
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    report = FidelityReport.from_outputs(ref, ref.clone(), [[1, 2]], [[1, 3]], {"a": 0.1, "b": 0.3})
    assert report.cosine_min == pytest.approx(1.0) and report.kl_max == 0.0
    assert report.token_match == 0.5 and report.exact_prompts == 0
    assert report.weight_error_max == 0.3 and report.weight_error_mean == pytest.approx(0.2)
    assert set(report.to_dict()) >= {"cosine_min", "kl_mean", "token_match"}
