"""The results chart's geometry."""

from __future__ import annotations

from privpoll.web.chart import bar_chart, nice_step


def test_chart_scales_to_the_votes_and_keeps_whiskers_in_range() -> None:
    rows = [
        {"choice": "pizza", "estimate": 60.2, "ci95": (50.0, 70.0)},
        {"choice": "sushi", "estimate": -1.5, "ci95": (0.0, 4.0)},
    ]
    chart = bar_chart(rows, 100)
    assert [t.label for t in chart.ticks] == ["0", "20", "40", "60", "80", "100"]
    pizza, sushi = chart.bars
    assert pizza.whisker_from < chart.plot_left + pizza.bar_width < pizza.whisker_to
    assert sushi.bar_width == 0
    assert chart.plot_left <= sushi.whisker_from < sushi.whisker_to < pizza.whisker_to
    assert pizza.whisker_to <= chart.plot_right
    assert nice_step(7) == 2
    assert nice_step(0) == 1


def test_no_votes_still_draws_a_scale() -> None:
    chart = bar_chart([{"choice": "a", "estimate": 0.0, "ci95": (0.0, 0.0)}], 0)
    assert [t.label for t in chart.ticks] == ["0", "1"]
    assert chart.bars[0].bar_width == 0
