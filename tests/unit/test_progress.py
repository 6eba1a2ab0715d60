"""What the API and the Poll's status say of a poll's re-mix and purge."""

from __future__ import annotations

from datetime import UTC, datetime

from privpoll.service.lifecycle import Progress


def test_times_are_null_until_then_and_utc_after() -> None:
    assert Progress(remixed=False, purged=False).to_json() == {
        "remixed": False,
        "purged": False,
        "remixedAt": None,
        "purgedAt": None,
    }
    remixed = datetime(2026, 12, 7, 18, 0, 1, 250000, tzinfo=UTC)
    purged = datetime(2026, 12, 7, 18, 0, 3, tzinfo=UTC)
    found = Progress(True, True, "done", remixed, purged).to_json()
    assert found["remixedAt"] == "2026-12-07T18:00:01.250000Z"
    assert found["purgedAt"] == "2026-12-07T18:00:03Z"
    assert found["message"] == "done"
    elsewhere = datetime.fromisoformat("2026-12-07T19:00:03+01:00")
    assert Progress(True, True, None, elsewhere, elsewhere).to_json()["purgedAt"] == (
        "2026-12-07T18:00:03Z"
    )
