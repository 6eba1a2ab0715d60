"""One definition of "in CI" for every test, and no skip that bypasses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.environment import in_ci

ROOT = Path(__file__).resolve().parents[2]
HOME = Path("tests/environment.py")


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "Yes", " true "])
def test_ci_is_recognised_however_a_runner_spells_it(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_not_ci(value: str) -> None:
    assert not in_ci({"CI": value})
    assert not in_ci({})


def python_files() -> list[Path]:
    return sorted(
        p.relative_to(ROOT)
        for folder in ("tests", "bench")
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def test_only_tests_environment_reads_ci_or_skips() -> None:
    """A second reading of CI drifts from the first (the browser tests once skipped with
    CI=1); a skip outside tests/environment.py may skip in CI too without saying so."""
    reads_ci = re.compile(r"""environ(\.get)?\s*[\[(]\s*["']CI["']|getenv\(\s*["']CI["']""")
    skips = re.compile(r"pytest\.(skip|importorskip)\(|mark\.(skip|skipif|xfail)\b")
    found = [
        f"{path}: {line.strip()}"
        for path in python_files()
        if path not in (HOME, Path(__file__).relative_to(ROOT))
        for line in (ROOT / path).read_text().splitlines()
        if reads_ci.search(line) or skips.search(line)
    ]
    assert found == []
