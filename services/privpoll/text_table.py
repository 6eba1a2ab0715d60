"""Plain-text tables for the CLI: columns as wide as their longest cell, so long names fit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """The rows under their headers, columns two spaces apart; ``right``: right-aligned ones."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def results_table(choices: Sequence[Mapping[str, Any]]) -> str:
    """The results' choices: estimate (clipped to the possible counts), interval, stored."""
    rows = [
        [
            str(row["choice"]),
            f"{row['estimate']:.1f}",
            f"[{row['ci95'][0]:.1f}, {row['ci95'][1]:.1f}]",
            str(row["stored"]),
        ]
        for row in choices
    ]
    return table(["choice", "estimate", "95% interval", "stored"], rows, right=(1, 3))


def polls_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(item["name"]),
            str(item["phase"]),
            f"{item['turnout']['voters']}/{item['turnout']['eligible']}",
            str(item["spec"].get("title", "")),
        ]
        for item in items
    ]
    return table(["name", "phase", "voted", "title"], rows, right=(2,))
