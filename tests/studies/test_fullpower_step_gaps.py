"""A point's longest step gap from two /metrics scrapes: exact when the maximum grew, else a bucket's bound."""
from __future__ import annotations

import math

from lab.studies.fullpower.step_gaps import StepGapScrape, longest_gap, parse_step_gaps

TEXT = """# TYPE lab:engine_step_gap_seconds histogram
lab:engine_step_gap_seconds_bucket{le="0.01",model_name="m"} 5.0
lab:engine_step_gap_seconds_bucket{le="0.1",model_name="m"} 7.0
lab:engine_step_gap_seconds_bucket{le="1.0",model_name="m"} 8.0
lab:engine_step_gap_seconds_bucket{le="+Inf",model_name="m"} 8.0
lab:engine_step_gap_seconds_count{model_name="m"} 8.0
lab:engine_step_gap_seconds_sum{model_name="m"} 0.9
# TYPE lab:engine_step_gap_max_seconds gauge
lab:engine_step_gap_max_seconds{model_name="m"} 0.6
"""


def scrape(counts: tuple[float, float, float], max_s: float) -> StepGapScrape:
    return StepGapScrape(((0.01, counts[0]), (0.1, counts[1]), (1.0, counts[2]), (math.inf, counts[2])),
                         counts[2], max_s)


def test_parse_reads_cumulative_buckets_count_and_max():
    assert parse_step_gaps(TEXT) == scrape((5.0, 7.0, 8.0), 0.6)
    assert parse_step_gaps('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 0\n') is None


def test_a_new_maximum_during_the_point_is_exact():
    gap = longest_gap(scrape((5, 7, 8), 0.6), scrape((9, 11, 13), 0.8))
    assert (gap.longest_s, gap.is_upper_bound, gap.num_gaps) == (0.8, False, 5)


def test_otherwise_the_highest_bucket_that_grew_bounds_it():
    # 4 new gaps, all <= 0.1 s (the 0.1 bucket grew by 4): at most 0.1 s, below the old 0.6 s maximum.
    gap = longest_gap(scrape((5, 7, 8), 0.6), scrape((7, 11, 12), 0.6))
    assert (gap.longest_s, gap.is_upper_bound, gap.num_gaps) == (0.1, True, 4)
    # One new gap in the (0.1, 1] bucket: the old maximum 0.6 s is the tighter bound.
    gap = longest_gap(scrape((5, 7, 8), 0.6), scrape((5, 7, 9), 0.6))
    assert (gap.longest_s, gap.is_upper_bound) == (0.6, True)


def test_no_gap_or_no_export_is_nan():
    assert math.isnan(longest_gap(scrape((5, 7, 8), 0.6), scrape((5, 7, 8), 0.6)).longest_s)
    assert math.isnan(longest_gap(None, None).longest_s)
