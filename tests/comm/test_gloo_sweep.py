"""A real sweep: two gloo processes under torchrun at two tiny sizes, each result checked against the sum of ranks.

About ten seconds on two CPU cores, nearly all of it torchrun and torch starting up; bounded by `timeout_s`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.comm.bandwidth import COLLECTIVES, busbw_gbps
from lab.comm.config import SweepConfig
from lab.comm.knobs import parse_variant, variant_environment
from lab.comm.launch import run_sweep
from lab.errors import LabError

CONFIG = SweepConfig(backend="gloo", min_bytes=8, max_bytes=1024, factor=128, warmup_iters=1, iters=2,
                     latency_max_bytes=8)


def test_two_gloo_processes(tmp_path: Path) -> None:
    env = variant_environment(parse_variant("algo-ring"))  # as a knob variant runs: NCCL_ALGO reaches the ranks
    result = run_sweep(CONFIG, 2, tmp_path, env=env, timeout_s=120)
    assert (result.backend_label, result.device, result.nranks) == ("gloo (CPU)", "cpu", 2)
    assert [(r.collective, r.size_bytes) for r in result.rows] == [(c, s) for c in COLLECTIVES for s in (8, 1024)]
    assert all(r.wrong == 0 for r in result.rows)
    # rank 0's first output: all_reduce 1 + 2 (ranks fill r+1); all_gather rank 0's 1; reduce_scatter (0+1)(1+2);
    # all_to_all what rank 0 sent itself, 0*2 + 0 + 1
    first = {r.collective: r.first_output for r in result.rows}
    assert first == {"all_reduce": 3.0, "all_gather": 1.0, "reduce_scatter": 3.0, "all_to_all": 1.0}
    for r in result.rows:
        assert r.time_us > 0
        assert r.busbw_gbps == pytest.approx(busbw_gbps(r.collective, r.size_bytes, r.time_us * 1e-6, 2))
    assert result.nccl_env.get("NCCL_ALGO") == "Ring"
    (latency,) = result.latency
    assert latency.size_bytes == 8 and latency.eager_us > 0 and latency.graph_us is None
    assert result.graphs.startswith("not applicable")


def test_a_run_past_its_timeout_is_stopped_and_named(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="ran past 0.5 s and was stopped"):
        run_sweep(CONFIG, 2, tmp_path, timeout_s=0.5)
