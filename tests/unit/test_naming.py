"""What a process logs while NATS is away: one plain line per failed attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from privpoll.bus import naming


def test_a_failed_connection_attempt_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py's own report logs every attempt with a traceback: noise in the logs of an
    ingest waiting for its NATS, and, on CPython 3.11.7, formatting it races another thread's
    ``ast.parse`` (gh-106905; it broke werkzeug's route compiling in a test run)."""
    caplog.set_level(logging.INFO)

    async def attempt() -> None:
        # Port 1: refused at once; connect() keeps trying until the wait ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(naming.connect("nats://127.0.0.1:1", "test"), 1.5)

    asyncio.run(attempt())
    reports = [r for r in caplog.records if "NATS" in r.getMessage() or r.name.startswith("nats")]
    assert reports, "each failed attempt is reported"
    assert all(r.exc_info is None for r in reports), [r.getMessage() for r in reports]
    assert "ConnectionRefusedError" in reports[0].getMessage()
