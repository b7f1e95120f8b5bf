"""The geometry of the dashboard's charts, drawn by the page as inline SVG: no script, no CDN, no image files.

Only positions are computed here; the template writes the SVG (escaped like the rest of the page) with its
``<title>`` and ``<desc>``, and a table of the same figures follows each chart for screen readers and for
whoever wants the exact numbers. The drawing is 400 units wide and scales to its box, so it reads on a phone
(390 px) as on a desktop, where the stylesheet caps its width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 400
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 30
#: the width of a label's character and the space between labels under the x axis, in drawing units (the
#: ticks' font is 12 units): as many labels as fit are written, evenly spaced; the table has them all
CHARACTER, GAP = 7, 14


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str  # what the point is: "2026-11-30: 42.5 (17 answers)"


@dataclass(frozen=True)
class LineChart:
    """A trend: the score per bucket, a line through the buckets that have answers (broken where one has
    none), a dot on each, and the axes."""

    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    zero: float | None  # the y of the zero line when the scale crosses zero (NPS)
    segments: list[str]  # SVG path data, one per run of consecutive buckets with answers
    points: list[Point]


def _y_ticks(low: float, high: float) -> list[float]:
    if high - low > 10:  # NPS: every 50
        return [low + step * (high - low) / 4 for step in range(5)]
    return [float(value) for value in range(int(low), int(high) + 1)]


def line_chart(
    labels: Sequence[str], values: Sequence[float | None], counts: Sequence[int], low: float, high: float
) -> LineChart:
    """The chart of ``values`` (None: no answers in that bucket) on a ``low``..``high`` scale."""
    plot_left, plot_right = LEFT, WIDTH - RIGHT
    plot_top, plot_bottom = TOP, HEIGHT - BOTTOM
    step = (plot_right - plot_left) / max(len(values), 1)

    def x(index: int) -> float:
        return round(plot_left + (index + 0.5) * step, 1)

    def y(value: float) -> float:
        return round(plot_bottom - (value - low) / (high - low) * (plot_bottom - plot_top), 1)

    segments: list[str] = []
    points: list[Point] = []
    run: list[tuple[float, float]] = []
    for index, (label, value, count) in enumerate(zip(labels, values, counts, strict=True)):
        if value is None:
            if run:
                segments.append(_path(run))
            run = []
            continue
        point = (x(index), y(value))
        run.append(point)
        points.append(Point(*point, f"{label}: {value:g} ({count})"))
    if run:
        segments.append(_path(run))
    longest = max((len(label) for label in labels), default=1)
    fit = max(1, int((plot_right - plot_left) // (longest * CHARACTER + GAP)))
    every = max(1, -(-len(labels) // fit))
    return LineChart(
        WIDTH,
        HEIGHT,
        plot_left,
        plot_right,
        plot_top,
        plot_bottom,
        [Tick(y(value), f"{value:g}") for value in _y_ticks(low, high)],
        [Tick(x(index), label) for index, label in enumerate(labels) if index % every == 0],
        y(0) if low < 0 < high else None,
        segments,
        points,
    )


def _path(points: list[tuple[float, float]]) -> str:
    if len(points) == 1:  # a single point: a short stroke so the line is not lost; the dot shows it anyway
        x, y = points[0]
        return f"M{x - 0.5},{y}L{x + 0.5},{y}"
    return "M" + "L".join(f"{x},{y}" for x, y in points)


@dataclass(frozen=True)
class Part:
    name: str  # promoters / passives / detractors: the CSS class that colours it
    x: float
    width: float


def stacked_bar(parts: Sequence[tuple[str, int]], width: float = WIDTH) -> list[Part]:
    """The parts of a horizontal bar, each as wide as its share of the total; empty parts are left out."""
    total = sum(count for _name, count in parts)
    drawn: list[Part] = []
    position = 0.0
    for name, count in parts:
        if not count:
            continue
        size = round(width * count / total, 2)
        drawn.append(Part(name, round(position, 2), size))
        position += size
    return drawn
