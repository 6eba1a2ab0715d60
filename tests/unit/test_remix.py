"""When the re-mixer refuses, and what it says (the API and the CLI show these words)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from privpoll.bus import topology
from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollRules
from privpoll.db.remix import Remixed
from privpoll.service.lifecycle import refusal


def poll(*, closed: bool = False, closes_at: datetime | None = None) -> Poll:
    rules = PollRules.model_validate(
        {"title": "t", "choices": ["a", "b"], "schedule": {"closesAt": closes_at}}
    )
    return Poll(name="lunch", uid=randomness.new_id(), rules=rules, eligible=3, closed=closed)


def test_an_open_poll_is_refused_for_good() -> None:
    found = refusal(poll(), topology.Drain(taking_votes=True, held=0))
    assert found is not None
    assert (found.code, found.retry) == ("poll_open", False)
    assert str(found) == (
        "poll lunch is open: close it first, the re-mixer runs once no vote can come"
    )


def test_a_closed_poll_not_yet_drained_is_refused_for_now() -> None:
    for drain in (
        topology.Drain(taking_votes=False, held=7),
        topology.Drain(taking_votes=True, held=0),
    ):
        found = refusal(poll(closed=True), drain)
        assert found is not None
        assert (found.code, found.retry) == ("not_drained", True)
        assert str(found) == (
            "the sinks have not yet stored every vote of poll lunch "
            f"({drain.held} envelopes left); try again in a few seconds"
        )


def test_a_closed_drained_poll_may_be_remixed() -> None:
    drained = topology.Drain(taking_votes=False, held=0)
    assert refusal(poll(closed=True), drained) is None
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert refusal(poll(closes_at=past), drained) is None, "closesAt passed: closed too"


def test_what_the_remixer_reports() -> None:
    done = Remixed("lunch", 3, 9, "vacuumed")
    assert done.to_json() == {
        "name": "lunch",
        "remixed": True,
        "votes": 3,
        "ballots": 9,
        "purge": "vacuumed",
        "message": "poll lunch remixed: 3 votes and 9 ballots rewritten with fresh ids in one "
        "transaction; the old row versions are vacuumed away, the vote tables' files "
        "rewritten and the WAL that recorded them dropped",
    }
    assert (
        Remixed("lunch", 3, 9, "pending")
        .describe()
        .endswith(
            "some old row versions remain because an older transaction still sees them; "
            "privpoll up vacuums again until they are gone (or run this again later)"
        )
    )
    assert (
        Remixed("lunch", 3, 9, "gc")
        .describe()
        .endswith(
            "CockroachDB drops the old row versions within the vote tables' gc.ttlseconds; "
            "the poll is purged once a read from before the re-mix is refused"
        )
    )
