"""nccl-tests' arithmetic (doc/PERFORMANCE.md) on hand-computed cases: algbw = S/t, busbw = algbw x factor(n)."""
from __future__ import annotations

import pytest

from lab.comm.bandwidth import algbw_gbps, buffer_plan, buffer_plans, bus_factor, busbw_gbps
from lab.errors import LabError


@pytest.mark.parametrize(("collective", "nranks", "factor"), [
    ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5), ("all_reduce", 8, 1.75),
    ("all_gather", 2, 0.5), ("all_gather", 8, 0.875), ("reduce_scatter", 4, 0.75), ("all_to_all", 8, 0.875)])
def test_bus_factor_is_nccl_tests_correction(collective: str, nranks: int, factor: float) -> None:
    assert bus_factor(collective, nranks) == pytest.approx(factor)


def test_one_gigabyte_in_ten_milliseconds() -> None:
    # S = 1e9 B in t = 10 ms: algbw = 100 GB/s (GB = 1e9 B, as nccl-tests prints it).
    assert algbw_gbps(10**9, 0.01) == pytest.approx(100.0)
    assert busbw_gbps("all_reduce", 10**9, 0.01, 8) == pytest.approx(175.0)  # x 2*7/8
    assert busbw_gbps("all_gather", 10**9, 0.01, 8) == pytest.approx(87.5)  # x 7/8
    assert busbw_gbps("reduce_scatter", 10**9, 0.01, 4) == pytest.approx(75.0)  # x 3/4
    assert busbw_gbps("all_to_all", 10**9, 0.01, 2) == pytest.approx(50.0)  # x 1/2


def test_a_gib_all_reduce_on_two_ranks_has_busbw_equal_to_algbw() -> None:
    # 2(n-1)/n = 1 at n = 2: 1 GiB in 3 ms -> 1073741824 / 0.003 / 1e9 = 357.91 GB/s both ways.
    assert busbw_gbps("all_reduce", 1 << 30, 0.003, 2) == pytest.approx(357.913941, rel=1e-6)


def test_size_is_the_whole_array() -> None:
    # all_gather: S is the output (n x one rank's input); reduce_scatter: the input (n x one rank's output).
    gather = buffer_plan("all_gather", 1024, 4, 4)
    assert (gather.size_bytes, gather.input_elems, gather.output_elems) == (1024, 64, 256)
    scatter = buffer_plan("reduce_scatter", 1024, 4, 4)
    assert (scatter.size_bytes, scatter.input_elems, scatter.output_elems) == (1024, 256, 64)
    reduce = buffer_plan("all_reduce", 1024, 4, 2)
    assert (reduce.size_bytes, reduce.input_elems, reduce.output_elems) == (1024, 512, 512)


def test_sizes_round_to_whole_chunks_per_rank() -> None:
    # 100 B of float32 over 8 ranks: 25 elements -> 3 per rank -> 24 elements, S = 96 B.
    assert buffer_plan("all_to_all", 100, 8, 4).size_bytes == 96
    # 8 B over 8 ranks is less than one element each: one per rank, S = 32 B, and the smaller sizes merge.
    assert buffer_plan("all_gather", 8, 8, 4).size_bytes == 32
    assert [p.size_bytes for p in buffer_plans("all_gather", (8, 16, 32, 64), 8, 4)] == [32, 64]
    assert buffer_plan("all_reduce", 2, 2, 4).size_bytes == 4  # at least one element


def test_bad_input_is_named() -> None:
    with pytest.raises(LabError, match="unknown collective 'broadcast'; valid collectives: all_reduce"):
        bus_factor("broadcast", 2)
    with pytest.raises(LabError, match="at least 2 ranks"):
        bus_factor("all_reduce", 1)
    with pytest.raises(ValueError, match="positive"):
        algbw_gbps(8, 0.0)
