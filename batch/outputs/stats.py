"""Percentiles and histogram bins for report.html, computed step by step as numpy computes them.

report.html used numpy for these three things. numpy costs a run ~75 ms of import, and pyarrow
imports it whenever it is installed: computed here in plain Python, with numpy's arithmetic
kept operation for operation (its linear percentile, `histogram(bins=n)`, and `geomspace` with
`histogram(bins=edges)`), so the page stays what it was.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import pairwise


def percentiles(ordered: Sequence[int], qs: Sequence[int]) -> list[float]:
    """`numpy.percentile(ordered, qs)` (method "linear") of sorted, non-empty values."""
    last = len(ordered) - 1
    out: list[float] = []
    for q in qs:
        virtual = last * (q / 100)
        if virtual >= last:
            out.append(float(ordered[last]))
            continue
        below = math.floor(virtual)
        gamma = virtual - below
        a, b = ordered[below], ordered[below + 1]
        diff = b - a
        # numpy's _lerp: from the nearer end, so that gamma 1 gives b exactly
        out.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)
    return out


def linspace(start: float, stop: float, num: int) -> list[float]:
    """`numpy.linspace(start, stop, num)` (endpoint included), num >= 2, start != stop."""
    step = (float(stop) - float(start)) / (num - 1)
    values = [i * step + start for i in range(num)]
    values[-1] = float(stop)
    return values


def uniform_histogram(values: Sequence[int], bins: int) -> tuple[list[int], list[float]]:
    """`numpy.histogram(values, bins=bins)`: counts and edges of equal-width bins (non-empty)."""
    first: float = min(values)
    last: float = max(values)
    if first == last:
        first, last = first - 0.5, last + 0.5
    edges = linspace(first, last, bins + 1)
    denom = last - first
    counts = [0] * bins
    for value in values:
        x = float(value)
        at = int(((x - first) / denom) * bins)
        if at == bins:
            at -= 1
        if x < edges[at]:
            at -= 1
        if x >= edges[at + 1] and at != bins - 1:
            at += 1
        counts[at] += 1
    return counts, edges


def geomspace(start: int, stop: int, num: int) -> list[float]:
    """`numpy.geomspace(start, stop, num)` for 0 < start < stop: log-spaced, ends exact."""
    values = [10.0**y for y in linspace(math.log10(start), math.log10(stop), num)]
    values[0], values[-1] = float(start), float(stop)
    return values


def histogram_with_edges(ordered: Sequence[int], edges: Sequence[float]) -> list[int]:
    """`numpy.histogram(values, bins=edges)` of sorted values: bins [a, b), the last [a, b]."""
    below = [bisect_left(ordered, edge) for edge in edges[:-1]]
    below.append(bisect_right(ordered, edges[-1]))
    return [b - a for a, b in pairwise(below)]
