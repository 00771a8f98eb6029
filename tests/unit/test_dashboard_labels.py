"""Axis labels of the dashboard charts never overlap (they did with 3 weeks of days)."""

from __future__ import annotations

import itertools
import re

import pytest

from streams.web import dashboard as d


def shown_labels(svg: str) -> list[tuple[float, str]]:
    ticks = re.findall(
        r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle" class="tick">([^<]+)<', svg
    )
    return [(float(x), label) for x, label in ticks]


@pytest.mark.parametrize("days", [3, 14, 21, 30, 60])
@pytest.mark.parametrize("chart", ["bar", "line"])
def test_axis_labels_do_not_overlap(days: int, chart: str) -> None:
    labels = [f"11-{n:02d}" for n in range(1, days + 1)]
    series = [d.Series("a", [1.0] * days, "#000"), d.Series("b", [2.0] * days, "#111")]
    svg = (d.bar_chart if chart == "bar" else d.line_chart)(labels, series, "t")
    ticks = shown_labels(svg)
    assert ticks and ticks[0][1] == labels[0]
    width = 5 * 6.2  # five characters at the tick font size
    assert all(b[0] - a[0] >= width for a, b in itertools.pairwise(ticks)), ticks
    assert len(ticks) >= min(days, 8)  # still labelled, not thinned to nothing


def test_an_empty_repeat_purchase_chart_says_why() -> None:
    from streams.web.server import repeat_note

    assert repeat_note([]).endswith("No orders yet.")
    assert repeat_note([("2026-11-01", 60, 0.0), ("2026-12-01", 417, 0)]).endswith(
        "No customer has ordered a second time yet."
    )
    assert repeat_note([("2026-11-01", 60, 0.05)]).endswith("ordered again.")
