"""The busbw plot reads against the link: its two peak lines where the card is known, none where it is not."""
from __future__ import annotations

from lab.comm.links import NVLINK4
from lab.comm.plots import plot_busbw, plot_latency
from lab.comm.results import LatencyRow
from tests.comm.fakes import result, row


def _horizontal_levels(figure) -> set[float]:
    (ax,) = figure.axes
    return {line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1
            and list(line.get_xdata()) == [0, 1]}


def test_peak_lines_where_the_link_is_known() -> None:
    gpu = result([row("all_reduce", 8, 10.0), row("all_reduce", 1 << 30, 3000.0)])
    assert _horizontal_levels(plot_busbw(gpu, NVLINK4)) == {450.0, 370.0}
    assert _horizontal_levels(plot_busbw(gpu, None)) == set()


def test_a_cpu_run_says_gloo_and_why_there_are_no_graphs() -> None:
    cpu = result([row("all_reduce", 8, 10.0)], backend="gloo", latency=(LatencyRow(8, 400.0, None),))
    assert "gloo (CPU)" in plot_busbw(cpu, None).axes[0].get_title()
    latency = plot_latency(cpu).axes[0]
    assert "not applicable" in latency.get_title() and len(latency.get_lines()) == 1  # eager only
