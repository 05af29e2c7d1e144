"""The report's charts, written as inline SVG by hand (no file, font, script or URL).

They were drawn by matplotlib: importing it and laying out five figures cost ~0.6 s of CPU at
the end of every run (a third of a 1,000-device run's fixed cost, issue 13). Bars, stairs and a
histogram are a few rectangles, paths and labels: written directly they cost milliseconds.
Text is SVG `<text>` in the page's own font (system-ui); nothing is fetched. Every value shown
is escaped here: labels come from the data (error classes, validity pairs).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from batch.outputs import stats
from batch.outputs.timeline import Interval

VALIDITY_PAIRS = 12  # distinct (requested, granted) bars before the rest are lumped together
WIDTH = 720.0
FONT = 12.0
CHAR_W = 0.6 * FONT  # a generous average glyph width, to leave room for labels
ROW = 26.0  # height of one bar's row
PAD = 10.0
AXIS_H = 40.0  # tick labels and the axis title under a plot
TICKS = 5


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG drawing: its size and its elements (ids unprefixed until `inline_svg`)."""

    width: float
    height: float
    body: str


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal is finer than a pixel."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, label: str, *, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" dominant-baseline="middle"'
        f"{extra}>{_e(label)}</text>"
    )


def nice_ticks(top: float, *, integer: bool) -> list[float]:
    """About `TICKS` round tick values from 0 to at least `top` (steps of 1, 2 or 5 x 10^k)."""
    top = max(top, 1.0 if integer else 1e-9)
    raw = top / TICKS
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(round(step)))
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _tick_text(value: float, *, integer: bool) -> str:
    if integer or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _frame(name: str, left: float, top: float, width: float, height: float) -> str:
    """The plot area's clip path and its outline."""
    return (
        f'<defs><clipPath id="{name}"><rect x="{_n(left)}" y="{_n(top)}" width="{_n(width)}"'
        f' height="{_n(height)}"/></clipPath></defs>'
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(width)}" height="{_n(height)}"'
        ' fill="none" stroke="#999"/>'
    )


def _x_axis(
    ticks: Sequence[float],
    left: float,
    width: float,
    bottom: float,
    scale: float,
    title: str,
    *,
    integer: bool,
) -> str:
    parts = []
    for tick in ticks:
        x = left + tick * scale
        if x > left + width + 0.5:
            continue
        parts.append(
            f'<line x1="{_n(x)}" y1="{_n(bottom)}" x2="{_n(x)}" y2="{_n(bottom + 4)}"'
            ' stroke="#999"/>'
        )
        parts.append(_text(x, bottom + 12, _tick_text(tick, integer=integer), anchor="middle"))
    parts.append(_text(left + width / 2, bottom + 30, title, anchor="middle"))
    return "".join(parts)


def _y_axis(
    ticks: Sequence[float], left: float, bottom: float, scale: float, *, integer: bool
) -> str:
    parts = []
    for tick in ticks:
        y = bottom - tick * scale
        parts.append(
            f'<line x1="{_n(left - 4)}" y1="{_n(y)}" x2="{_n(left)}" y2="{_n(y)}" stroke="#999"/>'
        )
        parts.append(_text(left - 6, y, _tick_text(tick, integer=integer), anchor="end"))
    return "".join(parts)


def bars(bars: Sequence[tuple[str, int, str]], unit: str) -> Chart:
    """Horizontal bars (label, count, colour), top to bottom, counts written at their ends."""
    left = PAD + CHAR_W * max((len(b[0]) for b in bars), default=1) + 8
    top = PAD
    plot_w = WIDTH - left - PAD - CHAR_W * 8  # room for the count at the longest bar's end
    plot_h = ROW * max(len(bars), 1)
    ticks = nice_ticks(max((b[1] for b in bars), default=0), integer=True)
    scale = plot_w / ticks[-1]
    parts = [_frame("plot", left, top, plot_w, plot_h)]
    for i, (label, count, colour) in enumerate(bars):
        y = top + i * ROW
        parts.append(
            f'<rect x="{_n(left)}" y="{_n(y + 4)}" width="{_n(count * scale)}"'
            f' height="{_n(ROW - 8)}" fill="{_e(colour)}" clip-path="url(#plot)"/>'
        )
        parts.append(_text(left - 6, y + ROW / 2, label, anchor="end"))
        parts.append(_text(left + count * scale + 4, y + ROW / 2, f"{count:,}"))
    parts.append(_x_axis(ticks, left, plot_w, top + plot_h, scale, unit, integer=True))
    return Chart(WIDTH, top + plot_h + AXIS_H + PAD, "".join(parts))


def _stairs(
    values: Sequence[float], edges: Sequence[float], x0: float, xs: float, bottom: float, ys: float
) -> str:
    """A filled step outline: each value held from its edge to the next."""
    points = [f"M{_n(x0 + edges[0] * xs)},{_n(bottom)}"]
    for value, start, end in zip(values, edges, edges[1:], strict=False):
        y = bottom - value * ys
        points.append(f"L{_n(x0 + start * xs)},{_n(y)}L{_n(x0 + end * xs)},{_n(y)}")
    points.append(f"L{_n(x0 + edges[-1] * xs)},{_n(bottom)}Z")
    return "".join(points)


def timeline_chart(intervals: Sequence[Interval]) -> Chart:
    """Finished rows/s above, HTTP 429s/s below, on one time axis (seconds since start)."""
    edges = [intervals[0].start, *(i.end for i in intervals)]
    panels = [
        ("finished rows/s", [i.finished_per_s for i in intervals], "#1565c0"),
        ("HTTP 429/s", [i.throttled_per_s for i in intervals], "#c62828"),
    ]
    left, plot_h, gap = PAD + CHAR_W * 10, 130.0, 28.0
    plot_w = WIDTH - left - PAD
    span = max(edges[-1] - edges[0], 1e-9)
    xs = plot_w / span
    x0 = left - edges[0] * xs
    parts = []
    for k, (title, values, colour) in enumerate(panels):
        top = gap + k * (plot_h + gap)  # each panel's title in the gap above it
        bottom = top + plot_h
        ticks = nice_ticks(max(max(values), 1.0), integer=False)
        ys = plot_h / ticks[-1]
        clip = f"panel{k}"
        parts.append(_frame(clip, left, top, plot_w, plot_h))
        parts.append(
            f'<path d="{_stairs(values, edges, x0, xs, bottom, ys)}" fill="{colour}"'
            f' clip-path="url(#{clip})"/>'
        )
        parts.append(_y_axis(ticks, left, bottom, ys, integer=False))
        parts.append(_text(left, top - 10, title))
    bottom = 2 * (plot_h + gap)
    ticks = [t + edges[0] for t in nice_ticks(span, integer=True)]
    parts.append(
        _x_axis(
            [t - edges[0] for t in ticks],
            left,
            plot_w,
            bottom,
            xs,
            "seconds since start",
            integer=True,
        )
    )
    return Chart(WIDTH, bottom + AXIS_H + PAD, "".join(parts))


def histogram(durations: Sequence[int]) -> Chart:
    """Devices per duration bin; log-spaced bins (and axis) when the tail is long.

    `durations`: sorted, not empty.
    """
    low, high = max(int(durations[0]), 1), max(int(durations[-1]), 2)
    logarithmic = high / low > 50
    if logarithmic:  # a long tail: log-spaced bins keep the body of the distribution visible
        edges = stats.geomspace(low, high, 41)
        counts = stats.histogram_with_edges([max(d, 1) for d in durations], edges)
        position = [math.log10(edge) for edge in edges]
    else:
        counts, edges = stats.uniform_histogram(durations, 30)
        position = edges
    left, top, plot_h = PAD + CHAR_W * 8, PAD, 170.0
    plot_w = WIDTH - left - PAD
    span = float(position[-1] - position[0]) or 1.0
    xs = plot_w / span
    ticks = nice_ticks(float(max(counts)), integer=True)
    ys = plot_h / ticks[-1]
    bottom = top + plot_h
    parts = [_frame("plot", left, top, plot_w, plot_h)]
    for count, a, b in zip(counts, position[:-1], position[1:], strict=True):
        if count:
            x = left + float(a - position[0]) * xs
            parts.append(
                f'<rect x="{_n(x)}" y="{_n(bottom - count * ys)}" width="{_n(float(b - a) * xs)}"'
                f' height="{_n(count * ys)}" fill="#1565c0" stroke="#fff" stroke-width="0.5"'
                ' clip-path="url(#plot)"/>'
            )
    parts.append(_y_axis(ticks, left, bottom, ys, integer=True))
    title = "duration per device (ms)" + (", log scale" if logarithmic else "")
    if logarithmic:
        decades = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
        marks = [(math.log10(10**d) - float(position[0]), 10**d) for d in decades]
    else:
        first = float(position[0])
        marks = [
            (t - first, t)
            for t in nice_ticks(float(position[-1]), integer=True)
            if first - 1e-9 <= t <= float(position[-1]) + 1e-9
        ]
    for offset, value in marks:
        x = left + offset * xs
        parts.append(
            f'<line x1="{_n(x)}" y1="{_n(bottom)}" x2="{_n(x)}" y2="{_n(bottom + 4)}"'
            ' stroke="#999"/>'
        )
        parts.append(_text(x, bottom + 12, f"{value:,.0f}", anchor="middle"))
    parts.append(_text(left + plot_w / 2, bottom + 30, title, anchor="middle"))
    return Chart(WIDTH, bottom + AXIS_H + PAD, "".join(parts))


def requested_text(days: int | None) -> str:
    """Requested days as shown: none requested means EnOS applied its default."""
    return "EnOS default" if days is None else f"{days:,}"


def validity_chart(pairs: Sequence[tuple[tuple[int | None, int, bool], int]]) -> Chart:
    shown = list(pairs[:VALIDITY_PAIRS])
    labelled = [
        (f"{requested_text(r)} → {g:,} d", n, "#ef6c00" if c else "#2e7d32")
        for (r, g, c), n in shown
    ]
    rest = sum(n for _, n in pairs[VALIDITY_PAIRS:])
    if rest:
        labelled.append(("other", rest, "#78909c"))
    return bars(labelled, "renewed devices (requested → granted days; orange: clamped)")


def inline_svg(chart: Chart, name: str) -> str:
    """The chart as an inline `<svg>`, every id (and reference to one) prefixed with `name`:
    several charts share one document, so one chart's clip paths never resolve into another."""
    body = re.sub(r'\bid="', f'id="{name}-', chart.body)
    body = re.sub(r"url\(#", f"url(#{name}-", body)
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{_n(chart.width)}"'
        f' height="{_n(chart.height)}" viewBox="0 0 {_n(chart.width)} {_n(chart.height)}"'
        f' font-family="system-ui,sans-serif" font-size="{_n(FONT)}" role="img">'
        f"{body}</svg></figure>"
    )
