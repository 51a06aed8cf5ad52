"""The knob table: each variant against the default at decode sizes (time) and at large sizes (busbw)."""
from __future__ import annotations

import math

import pytest

from lab.comm.knob_sweep import VariantOutcome, knob_note, knob_rows
from lab.comm.knobs import parse_variant
from lab.comm.summary import knob_metrics
from tests.comm.fakes import result, row

MIB = 1 << 20
DEFAULT = result([row("all_reduce", 8, 10.0), row("all_reduce", 64 << 10, 20.0), row("all_reduce", 1 << 20, 50.0),
                  row("all_reduce", 256 * MIB, 1000.0), row("all_reduce", 512 * MIB, 2000.0)])


def test_ratios_at_decode_and_large_sizes() -> None:
    faster_small = result([row("all_reduce", 8, 5.0), row("all_reduce", 64 << 10, 40.0), row("all_reduce", 1 << 20, 1.0),
                           row("all_reduce", 256 * MIB, 1250.0), row("all_reduce", 512 * MIB, 2000.0)])
    (r,) = knob_rows(DEFAULT, [VariantOutcome(parse_variant("proto-ll"), faster_small)], 64 << 10, 256 * MIB)
    assert (r.variant, r.collective, r.env) == ("proto-ll", "all_reduce", "NCCL_PROTO=LL")
    # decode sizes 8 B and 64 KiB: ratios 0.5 and 2.0, geometric mean 1.0; the 1 MiB point is in neither band
    assert r.small_time_ratio == pytest.approx(1.0)
    assert r.small_time_us == pytest.approx(22.5)
    # large sizes: busbw ratio = time ratio inverted, 1000/1250 = 0.8 and 1.0 -> mean 0.9
    assert r.large_busbw_ratio == pytest.approx(0.9)
    assert knob_metrics([r]) == {"knob_proto_ll_all_reduce_small_time_ratio": pytest.approx(1.0),
                                 "knob_proto_ll_all_reduce_large_busbw_ratio": pytest.approx(0.9),
                                 "knob_variants_failed": 0.0}


def test_a_band_the_sweep_did_not_reach_is_none_and_a_failure_is_kept() -> None:
    small_only = result([row("all_reduce", 8, 20.0)])
    outcomes = [VariantOutcome(parse_variant("algo-tree"), result([row("all_reduce", 8, 10.0)])),
                VariantOutcome(parse_variant("channels-2"), None, "NCCL refused")]
    rows = knob_rows(small_only, outcomes, 64 << 10, 256 * MIB)
    assert rows[0].small_time_ratio == pytest.approx(0.5) and rows[0].large_busbw_ratio is None
    assert rows[1].error == "NCCL refused" and rows[1].small_time_ratio is None
    metrics = knob_metrics(rows)
    assert metrics["knob_variants_failed"] == 1.0
    assert "knob_algo_tree_all_reduce_large_busbw_ratio" not in metrics  # never a number for what was not run
    assert all(math.isfinite(v) for v in metrics.values())


def test_on_gloo_the_note_says_the_ratios_are_noise() -> None:
    assert "no effect on gloo" in knob_note(result([row("all_reduce", 8, 1.0)], backend="gloo"))
    assert "NVLS variables as the machine sets them" in knob_note(DEFAULT)
