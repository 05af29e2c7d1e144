"""The report's charts: matplotlib figures rendered to inline SVG (no file, font or URL).

matplotlib is imported inside the functions, not at the top: it costs ~1 s to import, and every
CLI start (plan, merge, --help) imports the report modules through the job.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from batch.timeline import Interval

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

VALIDITY_PAIRS = 12  # distinct (requested, granted) bars before the rest are lumped together


def _new_figure(height: float) -> Figure:
    # Imported here, not at the top: matplotlib costs ~1 s to import, and every CLI start
    # (plan, merge, --help) imports this module through the job.
    from matplotlib.figure import Figure

    return Figure(figsize=(7.5, height), layout="constrained")


def _whole_numbers(axis: Axis) -> None:
    """Ticks at whole numbers, written "1,000,000" (not "1.0" and a "1e6" offset)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter("{x:,.0f}")


def bars(bars: Sequence[tuple[str, int, str]], unit: str) -> Figure:
    """Horizontal bars (label, count, colour), top to bottom, counts written at their ends."""
    fig = _new_figure(0.45 + 0.3 * len(bars))
    ax = fig.subplots()
    labels = [b[0] for b in bars][::-1]
    counts = [b[1] for b in bars][::-1]
    drawn = ax.barh(labels, counts, color=[b[2] for b in bars][::-1])
    ax.bar_label(drawn, labels=[f"{c:,}" for c in counts], padding=3)
    ax.set_xlabel(unit)
    ax.set_xlim(0, max(max(counts), 1) * 1.15)
    _whole_numbers(ax.xaxis)
    return fig


def timeline_chart(intervals: Sequence[Interval]) -> Figure:
    fig = _new_figure(4.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    # Intervals are contiguous (zero-length ones are dropped), so their edges chain up.
    edges = [intervals[0].start, *(i.end for i in intervals)]
    top.stairs([i.finished_per_s for i in intervals], edges, fill=True, color="#1565c0")
    top.set_ylabel("finished rows/s")
    throttled = [i.throttled_per_s for i in intervals]
    bottom.stairs(throttled, edges, fill=True, color="#c62828")
    bottom.set_ylabel("HTTP 429/s")
    bottom.set_ylim(bottom=0, top=max(max(throttled), 1.0) * 1.1)
    bottom.set_xlabel("seconds since start")
    _whole_numbers(bottom.xaxis)
    return fig


def histogram(durations: np.ndarray) -> Figure:
    fig = _new_figure(2.8)
    ax = fig.subplots()
    low, high = max(int(durations.min()), 1), max(int(durations.max()), 2)
    if high / low > 50:  # a long tail: log-spaced bins keep the body of the distribution visible
        ax.hist(
            np.maximum(durations, 1), bins=np.geomspace(low, high, 40).tolist(), color="#1565c0"
        )
        ax.set_xscale("log")
    else:
        ax.hist(durations, bins=30, color="#1565c0")
    ax.set_xlabel("duration per device (ms)")
    ax.set_ylabel("devices")
    _whole_numbers(ax.yaxis)
    return fig


def requested_text(days: int | None) -> str:
    """Requested days as shown: none requested means EnOS applied its default."""
    return "EnOS default" if days is None else f"{days:,}"


def validity_chart(pairs: Sequence[tuple[tuple[int | None, int, bool], int]]) -> Figure:
    shown = list(pairs[:VALIDITY_PAIRS])
    labelled = [
        (f"{requested_text(r)} → {g:,} d", n, "#ef6c00" if c else "#2e7d32")
        for (r, g, c), n in shown
    ]
    rest = sum(n for _, n in pairs[VALIDITY_PAIRS:])
    if rest:
        labelled.append(("other", rest, "#78909c"))
    fig = bars(labelled, "renewed devices (requested → granted days; orange: clamped)")
    return fig


def inline_svg(fig: Figure, name: str) -> str:
    """The figure as an inline `<svg>`: no prolog, no metadata, ids prefixed with `name`.

    Several charts share one document, so every id (and every reference to one) gets the
    chart's name: glyph and clip-path definitions of one chart never resolve into another.
    """
    import matplotlib

    buffer = io.StringIO()
    # Text as paths (no font needed to view); a fixed salt makes the output reproducible.
    with matplotlib.rc_context(
        {"svg.fonttype": "path", "svg.hashsalt": "fleet-renew", "font.size": 9}
    ):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r'\bid="', f'id="{name}-', text)
    text = re.sub(r'href="#', f'href="#{name}-', text)
    text = re.sub(r"url\(#", f"url(#{name}-", text)
    return f"<figure>{text}</figure>"
