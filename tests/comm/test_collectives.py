"""The result check behind nccl-tests' #wrong: the data every rank predicts, and a broken collective is caught.

Runs in this process (no group): the collectives are replaced by stand-ins, so the check itself is what is tested.
"""
from __future__ import annotations

import pytest
import torch

from lab.comm import collectives
from lab.comm.bandwidth import buffer_plan


def test_the_check_data_of_rank_1_of_2() -> None:
    device, dtype = torch.device("cpu"), torch.float32
    cases = {  # collective -> (input, expected output) for rank 1 of 2, 16 B of float32
        "all_reduce": ([2, 2, 2, 2], [3, 3, 3, 3]),  # r+1 everywhere; 1 + 2
        "all_gather": ([2, 2], [1, 1, 2, 2]),  # chunk k is k+1
        "reduce_scatter": ([2, 2, 4, 4], [6, 6]),  # chunk j is (r+1)(j+1); (r+1)(1 + 2)
        "all_to_all": ([3, 3, 4, 4], [2, 2, 4, 4]),  # to j: r*n + j + 1; from k: k*n + r + 1
    }
    for collective, (inp, expected) in cases.items():
        got_in, got_out = collectives._data(buffer_plan(collective, 16, 2, 4), 1, 2, dtype, device)
        assert got_in.tolist() == inp and got_out.tolist() == expected, collective


def test_a_collective_that_does_nothing_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collectives.dist, "all_reduce", lambda tensor: None)
    prepared = collectives.prepare(buffer_plan("all_reduce", 16, 2, 4), 0, 2, torch.float32, torch.device("cpu"))
    assert prepared.check() == (4, 1.0)  # every element still rank 0's 1, never 1 + 2


def test_a_correct_answer_passes_and_the_buffers_are_zeroed_for_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collectives.dist, "all_reduce", lambda tensor: tensor.mul_(3))  # rank 0's 1 -> 3 = 1 + 2
    seen = []
    prepared = collectives.prepare(buffer_plan("all_reduce", 16, 2, 4), 0, 2, torch.float32, torch.device("cpu"))
    assert prepared.check() == (0, 3.0)
    monkeypatch.setattr(collectives.dist, "all_reduce", lambda tensor: seen.append(tensor.tolist()))
    prepared.run()
    assert seen == [[0.0, 0.0, 0.0, 0.0]]  # timed runs start from zeros: repeated in-place sums cannot overflow
