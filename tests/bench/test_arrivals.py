"""Arrival processes: seeded, right counts and mean rates, burstiness, flash-sale factor."""

from __future__ import annotations

import numpy as np
import pytest

from lab.bench.arrivals import ConstantArrivals, FlashSaleArrivals, GammaArrivals, PoissonArrivals, TraceArrivals

N = 20_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def mean_rate(times: np.ndarray) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.parametrize("process", [PoissonArrivals(8.0), GammaArrivals(8.0, 0.25), GammaArrivals(8.0, 4.0),
                                     ConstantArrivals(8.0)])
def test_counts_start_and_mean_rate(process):
    times = process.arrival_times_s(N, rng())
    assert len(times) == N and times[0] == 0.0 and np.all(np.diff(times) >= 0)
    assert mean_rate(times) == pytest.approx(8.0, rel=0.05)


def test_seeded_and_seed_sensitive():
    a = PoissonArrivals(3.0).arrival_times_s(100, rng(1))
    assert np.array_equal(a, PoissonArrivals(3.0).arrival_times_s(100, rng(1)))
    assert not np.array_equal(a, PoissonArrivals(3.0).arrival_times_s(100, rng(2)))


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_burstiness_sets_the_gap_variability(burstiness):
    # Gamma(shape=b, scale=1/(rate*b)): squared coefficient of variation of the gaps is 1/b.
    gaps = np.diff(GammaArrivals(5.0, burstiness).arrival_times_s(N, rng()))
    assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(1.0 / burstiness, rel=0.1)


def test_constant_is_evenly_spaced():
    assert np.allclose(ConstantArrivals(4.0).arrival_times_s(5, rng()), [0.0, 0.25, 0.5, 0.75, 1.0])


def test_infinite_rate_sends_everything_at_once():
    assert not PoissonArrivals(float("inf")).arrival_times_s(10, rng()).any()


def test_flash_sale_multiplies_the_rate_inside_the_window():
    process = FlashSaleArrivals(10.0, factor=5.0, start_s=100.0, end_s=200.0)
    times = process.arrival_times_s(N, rng())
    before = np.sum(times < 100.0) / 100.0
    during = np.sum((times >= 100.0) & (times < 200.0)) / 100.0
    after_end = times[-1]
    after = np.sum((times >= 200.0) & (times < after_end)) / (after_end - 200.0)
    assert before == pytest.approx(10.0, rel=0.1)
    assert during == pytest.approx(50.0, rel=0.05)
    assert during / before == pytest.approx(5.0, rel=0.15)
    assert after == pytest.approx(10.0, rel=0.05)
    assert process.rate_at(150.0) == 50.0 and process.rate_at(250.0) == 10.0


def test_trace_arrivals_replay_the_timestamps():
    process = TraceArrivals((0.0, 0.5, 2.0))
    assert list(process.arrival_times_s(2, rng())) == [0.0, 0.5]
    with pytest.raises(ValueError, match="3 arrivals"):
        process.arrival_times_s(4, rng())


@pytest.mark.parametrize("make", [lambda: PoissonArrivals(0.0), lambda: GammaArrivals(1.0, 0.0),
                                  lambda: FlashSaleArrivals(1.0, 2.0, 5.0, 5.0),
                                  lambda: FlashSaleArrivals(float("inf"), 2.0, 0.0, 1.0)])
def test_invalid_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make().arrival_times_s(10, rng())
