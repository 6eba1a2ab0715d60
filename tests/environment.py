"""The one answer, for every test, to "does this run in CI?", and what a test does when
something it needs is missing.

CI runs with ``CI`` set (the project's CI sets ``CI=true``; other runners set ``1`` or
``yes``). There, a missing tool fails the run instead of skipping: a skipped test proves
nothing, and a CI that skips in silence looks green. The only skips left in CI are the tests
that cannot run there at all, each saying so in its reason and listed in docs/testing.md.
Tests skip only through these functions (tests/unit/test_environment.py holds them to it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import pytest

CI_VALUES = frozenset({"1", "true", "yes"})


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether the tests run in CI: ``CI`` is true, 1 or yes (in any case)."""
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() in CI_VALUES


def need(ok: bool, what: str) -> None:
    """Skip on a developer's machine, saying why; fail loudly in CI."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{what} is missing in CI; the project's own set-up must provide it")
    pytest.skip(f"{what} is missing on this machine")


def cannot_run_in_ci(why: str) -> NoReturn:
    """Skip a test that this project's CI cannot run (its machines lack what the test needs,
    and no set-up step can add it), saying so: such tests are listed in docs/testing.md."""
    where = "in CI" if in_ci() else "on this machine"
    pytest.skip(f"cannot run {where}: {why} (never runs in this project's CI: docs/testing.md)")


def refused_by_this_machine(what: str, error: str) -> NoReturn:
    """The ladder of docs/deploy.md: a step of the one-node cluster that this machine refuses
    (its kernel, its sandbox) skips with the exact error it gave, in CI too; the steps below it
    still run and pass."""
    pytest.skip(f"{what} cannot run on this machine: {error}")


def only_under(target: str, why: str) -> pytest.MarkDecorator:
    """For tests that a make target of their own runs (never make test), saying which and why;
    listed in docs/testing.md."""
    return pytest.mark.skip(reason=f"these tests run under `{target}` only: {why}")
