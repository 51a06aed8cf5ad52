"""Sizes and sweep settings: parsed as nccl-tests reads them, and mistakes named before anything starts."""
from __future__ import annotations

import pytest

from lab.comm.config import SweepConfig, backend_label
from lab.comm.launch import check_nproc, resolve_nproc
from lab.comm.sizes import format_size, message_sizes, parse_size
from lab.errors import LabError


@pytest.mark.parametrize(("text", "size"), [("8", 8), ("64K", 65536), ("1M", 1 << 20), ("1G", 1 << 30),
                                            ("4KiB", 4096), ("2mb", 2 << 20), (256, 256)])
def test_sizes_are_powers_of_1024(text, size: int) -> None:
    assert parse_size(text) == size


def test_the_range_is_geometric_and_inclusive() -> None:
    assert message_sizes(8, 1 << 30, 2)[:3] == (8, 16, 32)
    assert len(message_sizes(8, 1 << 30, 2)) == 28  # 2^3 .. 2^30
    assert message_sizes(8, 4096, 8) == (8, 64, 512, 4096)
    assert format_size(1 << 30) == "1 GiB" and format_size(65536) == "64 KiB" and format_size(100) == "100 B"


def test_the_defaults_are_the_issue_range_with_nccl_tests_iterations() -> None:
    config = SweepConfig()
    assert (config.min_bytes, config.max_bytes, config.factor) == (8, 1 << 30, 2)
    assert (config.warmup_iters, config.iters, config.dtype) == (5, 20, "float32")
    assert SweepConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_bytes": "1M", "max_bytes": "1K"}, "size range inverted: min 1 MiB is above max 1 KiB"),
    ({"collectives": ("all_reduce", "allreduce")}, "unknown collective 'allreduce'; valid collectives"),
    ({"collectives": ()}, "no collective to run"),
    ({"dtype": "fp8"}, "unknown dtype 'fp8'; valid dtypes: float32"),
    ({"backend": "mpi"}, "unknown backend 'mpi'; valid backends: nccl, gloo"),
    ({"factor": 1}, "factor must be an integer of at least 2"),
    ({"iters": 0}, "iters must be at least 1"),
    ({"max_bytes": "1T"}, "not a message size: '1T'"),
    ({"min_bytes": 0}, "at least 1 byte"),
])
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(LabError, match=message):
        SweepConfig(**{"backend": "gloo", **kwargs})


def test_an_unknown_setting_from_json_is_named() -> None:
    with pytest.raises(LabError, match="unknown sweep setting"):
        SweepConfig.from_dict({"backend": "gloo", "sizes": [8]})


@pytest.mark.parametrize("nproc", [1, 0, -2])
def test_a_collective_needs_two_processes(nproc: int) -> None:
    with pytest.raises(LabError, match="nproc must be at least 2"):
        check_nproc(nproc, "gloo")


def test_nproc_defaults() -> None:
    assert resolve_nproc(None, "gloo") == 2 and resolve_nproc(0, "gloo") == 2 and resolve_nproc(3, "gloo") == 3
    with pytest.raises(LabError, match="nproc must be at least 2"):
        resolve_nproc(1, "gloo")


def test_a_cpu_run_is_labelled_gloo() -> None:
    assert backend_label("gloo", "cpu") == "gloo (CPU)"
    assert backend_label("nccl", "NVIDIA H100 80GB HBM3") == "nccl (NVIDIA H100 80GB HBM3)"
