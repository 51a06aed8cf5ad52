"""The link table and the issue's two targets: judged only where they can be, never a number from nothing."""
from __future__ import annotations

import pytest

from lab.comm.links import NVLINK4, link_for_device
from lab.comm.results import LatencyRow
from lab.comm.targets import busbw_target, latency_target
from tests.comm.fakes import result, row

MIB = 1 << 20


@pytest.mark.parametrize(("name", "link"), [("NVIDIA H100 80GB HBM3", NVLINK4), ("NVIDIA H200", NVLINK4),
                                            ("NVIDIA H100 SXM5 80GB", NVLINK4), ("NVIDIA H100 PCIe", None),
                                            ("NVIDIA H100 NVL", None), ("NVIDIA H200 NVL", None),
                                            ("NVIDIA A100-SXM4-80GB", None), ("cpu", None)])
def test_the_link_comes_from_the_device_name(name: str, link) -> None:
    assert link_for_device(name) == link


def test_nvlink4_figures_and_their_source() -> None:
    assert (NVLINK4.line_rate_gbps, NVLINK4.nccl_busbw_gbps) == (450.0, 370.0)
    assert "nccl-tests/issues/212" in NVLINK4.source


def _big(time_us: float):
    # 256 MiB all_reduce on 2 ranks: busbw = algbw = 268435456 B / t
    return result([row("all_reduce", 8, 10.0), row("all_reduce", 256 * MIB, time_us)])


def test_busbw_within_15_percent_of_nccls_figure() -> None:
    # 268435456 / 850 us = 315.8 GB/s >= 0.85 x 370 = 314.5: met; at 860 us, 312.1 GB/s: missed.
    met = busbw_target(_big(850.0), NVLINK4)
    assert met.met is True and met.measured == pytest.approx(315.81, rel=1e-3) and met.reference == 370.0
    assert busbw_target(_big(860.0), NVLINK4).met is False
    assert busbw_target(_big(500.0), NVLINK4).met is True  # above the Ring figure (NVLS) counts as met


def test_busbw_cannot_be_judged_without_a_link_a_gpu_or_the_sizes() -> None:
    assert busbw_target(_big(850.0), None).met is None
    gloo = busbw_target(result([row("all_reduce", 256 * MIB, 850.0)], backend="gloo"), NVLINK4)
    assert gloo.met is None and "gloo (CPU)" in gloo.note
    small = busbw_target(result([row("all_reduce", 1 * MIB, 10.0)]), NVLINK4)
    assert small.met is None and small.measured is None and "below 256 MiB" in small.note


def test_decode_latency_with_graphs() -> None:
    rows = (LatencyRow(8, 20.0, 9.0), LatencyRow(64 << 10, 30.0, 14.0), LatencyRow(1 << 20, 80.0, 40.0))
    target = latency_target(result([row("all_reduce", 8, 1.0)], latency=rows))
    assert target.met is True and target.measured == 14.0  # the slowest at <= 64 KiB; 1 MiB is not a decode size
    slow = latency_target(result([row("all_reduce", 8, 1.0)], latency=(LatencyRow(8, 20.0, 16.0),)))
    assert slow.met is False
    gloo = latency_target(result([row("all_reduce", 8, 1.0)], backend="gloo", latency=(LatencyRow(8, 500.0, None),)))
    assert gloo.met is None and gloo.measured is None and "not applicable" in gloo.note
