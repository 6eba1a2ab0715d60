"""Shared test helpers: what a test needs, and how loudly it complains when it is missing."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(ok: bool, what: str) -> None:
    """Skip on a developer's machine, saying why; fail loudly in CI (CI=true)."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI; the project's own set-up must install it")
    pytest.skip(f"{what} is missing on this machine")
