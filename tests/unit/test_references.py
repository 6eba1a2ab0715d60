"""Every document the code points a reader to exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"\b((?:docs|bench|charts|crds|examples)/[\w./-]+\.(?:md|yaml|json|png))")


def test_every_document_the_code_names_is_in_the_repository() -> None:
    sources = [*ROOT.glob("services/**/*.py"), *ROOT.glob("operator/**/*.py")]
    named = {
        (path.relative_to(ROOT), found)
        for path in sources
        for found in REFERENCE.findall(path.read_text())
    }
    assert named, "the code names documents (docs/design.md among them)"
    missing = sorted(f"{path}: {found}" for path, found in named if not (ROOT / found).exists())
    assert not missing, "\n".join(missing)


def test_no_docstring_points_outside_the_repository() -> None:
    for path in ROOT.glob("services/**/*.py"):
        assert "DESIGN.md" not in path.read_text(), f"{path}: the design is docs/design.md"
