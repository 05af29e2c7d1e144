"""batch.outputs.stats: numpy's percentile and histogram arithmetic, in plain Python.

The expected values are numpy's (2.4) for the same calls; a differential run of 80,000 random
duration sets against numpy gave the same report.html chart and figures (see
docs/benchmarks.md, round 5).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from batch.outputs import stats


def test_percentiles_interpolate_linearly_between_neighbours() -> None:
    assert stats.percentiles([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.9699999999999998]
    assert stats.percentiles([7], [50, 90, 99]) == [7.0, 7.0, 7.0]
    assert stats.percentiles([0, 10], [0, 100]) == [0.0, 10.0]


def test_uniform_histogram_puts_the_maximum_in_the_last_bin() -> None:
    counts, edges = stats.uniform_histogram(list(range(31)), 30)
    assert counts == [1] * 29 + [2]
    assert edges == [float(i) for i in range(31)]


def test_uniform_histogram_of_one_value_widens_the_range_by_half_each_side() -> None:
    counts, edges = stats.uniform_histogram([5, 5, 5], 30)
    assert (edges[0], edges[-1]) == (4.5, 5.5)
    assert counts[15] == 3 and sum(counts) == 3


def test_geomspace_ends_exactly_and_binning_is_half_open_except_the_last() -> None:
    edges = stats.geomspace(1, 1000, 4)
    assert edges == [1.0, 10.0, 100.0, 1000.0]
    assert stats.histogram_with_edges([1, 9, 10, 10, 100, 1000], edges) == [2, 2, 2]


@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=200), st.integers(1, 40))
def test_every_value_lands_in_exactly_one_bin(values: list[int], bins: int) -> None:
    counts, edges = stats.uniform_histogram(values, bins)
    assert sum(counts) == len(values) and len(edges) == bins + 1
    low, high = max(min(values), 1), max(max(values), 2)
    ordered = sorted(max(v, 1) for v in values)
    assert sum(stats.histogram_with_edges(ordered, stats.geomspace(low, high, 41))) == len(values)
