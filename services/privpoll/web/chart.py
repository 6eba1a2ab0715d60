"""The results bar chart: geometry of a server-rendered SVG, bars with 95% whiskers.

Horizontal positions are percentages of the chart's width and vertical ones pixels, with no
viewBox: the bars stretch to any screen while the text keeps its size, readable on a phone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LEFT = 0.5  # percent
RIGHT = 86.0  # percent; the rest is room for the estimate written after the whisker
ROW = 58
TOP = 6
AXIS = 30


@dataclass(frozen=True)
class Bar:
    choice: str
    estimate: float
    low: float
    high: float
    top: float  # y of the choice's label baseline
    bar_y: float
    bar_height: float
    bar_width: float
    whisker_from: float
    whisker_to: float
    whisker_y: float
    value_x: float


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    height: int
    plot_left: float
    plot_right: float
    axis_y: float
    bars: list[Bar]
    ticks: list[Tick]


def nice_step(largest: float, most: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving at most ``most`` steps."""
    if largest <= 0:
        return 1.0
    raw = largest / most
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return max(float(factor * power), 1.0)
    return 10.0 * power


def _label(value: float) -> str:
    return f"{value:g}"


def bar_chart(rows: Sequence[Mapping[str, Any]], votes: int) -> Chart:
    """One bar per choice from the results' ``choices`` rows; the scale runs 0..votes."""
    highest = max([float(votes), *(float(r["ci95"][1]) for r in rows), 1.0])
    step = nice_step(highest)
    top_of_scale = math.ceil(highest / step) * step
    span = RIGHT - LEFT

    def x(value: float) -> float:
        return round(LEFT + span * min(max(value, 0.0), top_of_scale) / top_of_scale, 3)

    bars = []
    for i, row in enumerate(rows):
        y = TOP + i * ROW
        lo, hi = float(row["ci95"][0]), float(row["ci95"][1])
        estimate = float(row["estimate"])
        bars.append(
            Bar(
                choice=str(row["choice"]),
                estimate=estimate,
                low=lo,
                high=hi,
                top=y + 16,
                bar_y=y + 24,
                bar_height=20,
                bar_width=round(x(estimate) - LEFT, 3),
                whisker_from=x(lo),
                whisker_to=x(hi),
                whisker_y=y + 34,
                value_x=max(x(hi), x(estimate)),
            )
        )
    axis_y = TOP + len(rows) * ROW
    ticks = []
    value = 0.0
    while value <= top_of_scale + 1e-9:
        ticks.append(Tick(x=x(value), label=_label(value)))
        value += step
    return Chart(
        height=int(axis_y + AXIS),
        plot_left=LEFT,
        plot_right=RIGHT,
        axis_y=axis_y,
        bars=bars,
        ticks=ticks,
    )
