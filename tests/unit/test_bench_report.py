"""docs/benchmarks.md as bench.report writes it from a results file."""

from __future__ import annotations

from typing import Any

from bench import report


def _run(rate: float, cpu_total: float, p99: float) -> dict[str, Any]:
    return {
        "requests_per_s": rate,
        "accepted_per_s": rate,
        "p50_ms": p99 / 4,
        "p90_ms": p99 / 2,
        "p99_ms": p99,
        "cpu_us_per_request": {"ingest": cpu_total * 0.8, "total": cpu_total},
    }


def _result(found: dict[str, Any]) -> dict[str, Any]:
    return {"file": "T.json", "seconds": 10, "machine": {}, "versions": {}, "results": found}


def _latency_rows(text: str) -> dict[str, list[str]]:
    table = text.split("## Latency at 50% and 80% of the saturated rate")[1].split("\n\n")[2]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    return {row[0]: row for row in rows[2:]}


def test_paced_runs_say_how_busy_the_cores_were_against_saturation() -> None:
    found = {
        "privpoll": _run(1000.0, 1600.0, 90.0),  # 1.6 CPU s per s
        "privpoll_at_50pct": {**_run(500.0, 2400.0, 12.0), "offered_per_s": 500.0},
        "privpoll_at_80pct": {**_run(800.0, 1900.0, 60.0), "offered_per_s": 800.0},
    }
    rows = _latency_rows(report.markdown(_result(found), None))

    assert rows["50%"][-2:] == ["2,400.0", "75%"]  # 1.2 of 1.6 CPU s per s
    assert rows["80%"][-2:] == ["1,900.0", "95%"]  # 1.52 of 1.6


def test_a_run_without_cpu_figures_leaves_the_cells_empty() -> None:
    saturated = _run(1000.0, 1600.0, 90.0)
    paced = {**_run(800.0, 1900.0, 60.0), "offered_per_s": 800.0}
    del paced["cpu_us_per_request"]
    text = report.markdown(_result({"privpoll": saturated, "privpoll_at_80pct": paced}), None)

    assert _latency_rows(text)["80%"][-2:] == ["-", "-"]
