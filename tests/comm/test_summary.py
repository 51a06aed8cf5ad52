"""A sweep as the lab's record: headline metrics, one child per point, the backend named in the params."""
from __future__ import annotations

import pytest

from lab.comm.config import SweepConfig
from lab.comm.results import LatencyRow, SweepResult
from lab.comm.summary import point_children, sweep_metrics, sweep_params
from lab.errors import LabError
from tests.comm.fakes import result, row


def test_metrics_per_collective_and_decode_latency() -> None:
    r = result([row("all_reduce", 8, 10.0), row("all_reduce", 1 << 20, 100.0), row("all_gather", 8, 5.0, wrong=2)],
               latency=(LatencyRow(8, 12.0, 7.0), LatencyRow(64, 13.0, 8.0)))
    metrics = sweep_metrics(r)
    assert metrics["all_reduce_busbw_peak_gbps"] == pytest.approx((1 << 20) / 100e-6 / 1e9)
    assert metrics["all_reduce_time_us_smallest"] == 10.0
    assert metrics["all_gather_wrong"] == 2.0
    assert (metrics["all_reduce_decode_eager_us_max"], metrics["all_reduce_decode_graph_us_max"]) == (13.0, 8.0)


def test_no_graph_metric_where_graphs_do_not_apply() -> None:
    r = result([row("all_reduce", 8, 10.0)], backend="gloo", latency=(LatencyRow(8, 12.0, None),))
    assert "all_reduce_decode_graph_us_max" not in sweep_metrics(r)
    params = sweep_params(r, SweepConfig(backend="gloo"), 2)
    assert params["backend"] == "gloo (CPU)" and params["device"] == "cpu" and params["nproc"] == 2


def test_one_child_per_point_and_a_json_round_trip() -> None:
    r = result([row("all_reduce", 8, 10.0), row("all_to_all", 4096, 20.0)])
    children = point_children("08_nccl_tp", r)
    assert [(c.params["collective"], c.params["size_bytes"]) for c in children] == [("all_reduce", 8),
                                                                                     ("all_to_all", 4096)]
    assert SweepResult.from_dict(r.to_dict()) == r


def test_wrong_results_fail_the_sweep() -> None:
    result([row("all_reduce", 8, 10.0)]).raise_if_wrong()
    with pytest.raises(LabError, match=r"wrong results in all_gather at 8 B \(2 elements\)"):
        result([row("all_reduce", 8, 10.0), row("all_gather", 8, 5.0, wrong=2)]).raise_if_wrong()
