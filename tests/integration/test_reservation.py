"""The voter reservation of ``prevent`` mode (ballot_box), in every state it can be found in.

A reservation is a key in the poll's voters bucket: missing (or deleted: released after a
failed publish), ``pending`` while an attempt publishes (its age is JetStream's own timestamp
of the write: the value holds no time), ``queued`` once the envelope is in the stream (``b""``,
from before there were states, means queued). These tests
drive the ingest's own ``BallotBox`` against a real nats-server, put the key in each state by
hand, and check what a voter would be told and what reaches the stream. None of them relies
on JetStream's duplicate window: its refusal is its own test, after a window of one second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from privpoll.bus import naming, topology
from privpoll.bus.ballot_box import AlreadyVoted, BallotBox, PollClosed, QueueDown
from privpoll.core import tokens
from privpoll.core.envelope import Envelope, seal
from privpoll.core.noise import NoiseDraws
from privpoll.core.poll import Poll
from privpoll.core.randomness import new_id
from privpoll.core.spec import PollRules
from privpoll.local.embedded import NatsServer

T = TypeVar("T")
PUBLISH_TIMEOUT = 1.0
ORPHAN_AGE = 1.0


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BallotBox]:
    """One nats-server and one ingest's ballot box for the module (each test its own poll)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    ballot_box = BallotBox(server.url, publish_timeout=PUBLISH_TIMEOUT)
    try:
        yield ballot_box
    finally:
        # The box lives as long as its ingest worker and has no stop of its own: close its
        # connections, so that they do not try to reconnect to the server stopped next.
        run(ballot_box, _disconnect(ballot_box))
        server.stop()


async def _disconnect(box: BallotBox) -> None:
    if box._publisher is not None:
        await box._publisher.connection.close()
    if box._nc is not None:
        await box._nc.close()


def run(box: BallotBox, work: Coroutine[Any, Any, T]) -> T:
    return box.call(work, timeout=30)


def make_poll(box: BallotBox, name: str, duplicates: str = "prevent") -> Poll:
    # Fake ballots but no randomized response: the envelope then always holds the real
    # choice, which one test looks for (the reservation does not depend on the noise).
    rules = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["pizza", "sushi"],
            "duplicates": duplicates,
            "noise": {"fakeVotes": {"distribution": "fixed", "count": 1}},
        }
    )
    poll = Poll(name=name, uid=new_id(), rules=rules, eligible=2)

    async def provision_it() -> None:
        await topology.provision_queue(await box.jetstream(), poll)

    run(box, provision_it())
    return poll


async def bucket(box: BallotBox, poll: Poll) -> KeyValue:
    return await (await box.jetstream()).key_value(naming.voters_bucket(poll.name))


def key(poll: Poll, voter: str) -> str:
    return tokens.reservation_key(poll.uid, voter)


def put(box: BallotBox, poll: Poll, voter: str, value: bytes) -> None:
    async def write() -> None:
        await (await bucket(box, poll)).put(key(poll, voter), value)

    run(box, write())


def value(box: BallotBox, poll: Poll, voter: str) -> bytes | None:
    """The reservation's value; None when there is none (never made, or released)."""

    async def read() -> bytes | None:
        try:
            entry = await (await bucket(box, poll)).get(key(poll, voter))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return entry.value or b""

    return run(box, read())


def eventually_value(box: BallotBox, poll: Poll, voter: str, expected: bytes | None) -> None:
    """The mark after a publish (and a release after a failed one) is sent without waiting."""
    deadline = time.monotonic() + 10
    while (found := value(box, poll, voter)) != expected:
        assert time.monotonic() < deadline, f"reservation is {found!r}, not {expected!r}"
        time.sleep(0.05)


def envelopes(box: BallotBox, poll: Poll) -> int:
    async def count() -> int:
        info = await (await box.jetstream()).stream_info(naming.stream(poll.name))
        return int(info.state.messages)

    return run(box, count())


def cast(box: BallotBox, poll: Poll, voter: str) -> None:
    run(box, box.cast(poll, voter, "pizza"))


def cast_watched(box: BallotBox, poll: Poll, voter: str) -> list[bytes | None]:
    """Cast alice's vote, and return every value her reservation took meanwhile (None: a
    deletion), the value it had before included: what another attempt would have read."""

    async def watch() -> list[bytes | None]:
        watcher = await (await bucket(box, poll)).watch(key(poll, voter))
        seen: list[bytes | None] = []
        voting = asyncio.ensure_future(box.cast(poll, voter, "pizza"))
        deadline = time.monotonic() + 10
        try:
            while b"queued" not in seen and time.monotonic() < deadline:
                try:
                    entry = await watcher.updates(timeout=1)  # type: ignore[no-untyped-call]
                except NatsTimeout:
                    continue
                if entry is not None:
                    seen.append(entry.value if entry.operation is None else None)
            await voting
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return seen

    return run(box, watch())


def pending_now(value: bytes | None) -> bool:
    """A reservation's value while its attempt publishes: "pending", and no time in it."""
    return value == b"pending"


def pending_mark() -> bytes:
    return b"pending"


@pytest.fixture
def orphans_soon(box: BallotBox, monkeypatch: pytest.MonkeyPatch) -> float:
    """A pending reservation counts as orphaned after ORPHAN_AGE seconds (the box's own rule,
    ``orphaned_after``, measured by JetStream's timestamp); the test waits that long."""
    monkeypatch.setattr(box, "orphaned_after", ORPHAN_AGE)
    return ORPHAN_AGE


def test_no_reservation_a_first_vote_reserves_publishes_and_marks_queued(box: BallotBox) -> None:
    poll = make_poll(box, "first")
    seen = cast_watched(box, poll, "alice")
    assert len(seen) == 2, seen
    assert pending_now(seen[0]), seen
    assert seen[1] == b"queued"
    assert envelopes(box, poll) == 1

    async def first_message() -> tuple[Envelope, str]:
        js = await box.jetstream()
        message = await js.get_msg(naming.stream(poll.name), 1)
        return Envelope.decode(message.data or b""), (message.headers or {})["Nats-Msg-Id"]

    envelope, message_id = run(box, first_message())
    assert envelope.actor.voter == "alice"
    assert "pizza" in [b.choice for b in envelope.ballots]
    assert message_id == key(poll, "alice"), "a retry of this vote is dropped as a duplicate"


def test_queued_the_voter_is_refused_and_nothing_is_published(box: BallotBox) -> None:
    """Voted long ago (no trace left in JetStream's duplicate window): still refused."""
    poll = make_poll(box, "queued")
    put(box, poll, "alice", b"queued")
    with pytest.raises(AlreadyVoted):
        cast(box, poll, "alice")
    assert envelopes(box, poll) == 0
    assert value(box, poll, "alice") == b"queued"


def test_queued_before_there_were_states_the_voter_is_refused(box: BallotBox) -> None:
    poll = make_poll(box, "legacy")
    put(box, poll, "alice", b"")
    with pytest.raises(AlreadyVoted):
        cast(box, poll, "alice")
    assert envelopes(box, poll) == 0


def test_queued_after_the_duplicate_window_a_second_vote_is_refused(box: BallotBox) -> None:
    """The whole story of a voter who votes again after JetStream forgot the first message
    id: the stream's window is one second here (120 s in production)."""
    poll = make_poll(box, "window")

    async def shorten() -> None:
        js = await box.jetstream()
        info = await js.stream_info(naming.stream(poll.name))
        await js.update_stream(dataclasses.replace(info.config, duplicate_window=1.0))

    run(box, shorten())
    cast(box, poll, "alice")
    eventually_value(box, poll, "alice", b"queued")
    time.sleep(2.5)  # the window is over: only the reservation can refuse now
    with pytest.raises(AlreadyVoted):
        cast(box, poll, "alice")
    assert envelopes(box, poll) == 1
    cast(box, poll, "bob")
    assert envelopes(box, poll) == 2


def test_pending_just_now_the_retry_waits_then_asks_for_patience(box: BallotBox) -> None:
    """Another attempt may still be publishing: neither refused (it may fail) nor let in
    (it may succeed); after the publish timeout, 503 with Retry-After."""
    poll = make_poll(box, "busy")
    mark = pending_mark()
    put(box, poll, "alice", mark)
    started = time.monotonic()
    with pytest.raises(QueueDown):
        cast(box, poll, "alice")
    assert time.monotonic() - started >= PUBLISH_TIMEOUT
    assert envelopes(box, poll) == 0
    assert value(box, poll, "alice") == mark, "the other attempt's reservation is untouched"


def during_a_wait(box: BallotBox, poll: Poll, change: Awaitable[object]) -> BaseException | None:
    """Cast alice's vote while her reservation is pending, and change it 0.3 s later."""

    async def both() -> BaseException | None:
        async def later() -> None:
            await asyncio.sleep(0.3)
            await change

        voting = asyncio.ensure_future(box.cast(poll, "alice", "pizza"))
        await later()
        try:
            await voting
        except Exception as error:
            return error
        return None

    return run(box, both())


def test_pending_then_released_the_waiting_retry_gets_in(box: BallotBox) -> None:
    """The other attempt failed and freed the voter: the waiting one reserves and publishes."""
    poll = make_poll(box, "released")
    put(box, poll, "alice", pending_mark())

    async def release() -> None:
        await (await bucket(box, poll)).delete(key(poll, "alice"))

    assert during_a_wait(box, poll, release()) is None
    assert envelopes(box, poll) == 1
    eventually_value(box, poll, "alice", b"queued")


def test_pending_then_queued_the_waiting_retry_is_refused(box: BallotBox) -> None:
    """The other attempt succeeded: the waiting one is told the vote is in (409)."""
    poll = make_poll(box, "succeeded")
    put(box, poll, "alice", pending_mark())

    async def queue() -> None:
        await (await bucket(box, poll)).put(key(poll, "alice"), b"queued")

    assert isinstance(during_a_wait(box, poll, queue()), AlreadyVoted)
    assert envelopes(box, poll) == 0


def test_pending_orphaned_by_a_dead_process_the_retry_takes_it_over(
    box: BallotBox, orphans_soon: float
) -> None:
    poll = make_poll(box, "orphaned")
    orphan = b"pending"
    put(box, poll, "alice", orphan)
    time.sleep(orphans_soon + 0.5)
    seen = cast_watched(box, poll, "alice")
    assert seen[0] == orphan
    assert pending_now(seen[1]), seen
    assert seen[2:] == [b"queued"]
    assert envelopes(box, poll) == 1
    with pytest.raises(AlreadyVoted):
        cast(box, poll, "alice")
    assert envelopes(box, poll) == 1


def test_pending_orphaned_after_its_envelope_got_in_the_retry_stores_nothing(
    box: BallotBox, orphans_soon: float
) -> None:
    """The dead process had published (its answer lost): the take-over publishes under the
    same message id, JetStream drops it as a duplicate, and the voter is told 409."""
    poll = make_poll(box, "orphan-published")
    put(box, poll, "alice", b"pending")
    time.sleep(orphans_soon + 0.5)

    async def publish_as_the_dead_process() -> None:
        envelope: Envelope = seal(NoiseDraws(poll.rules), "alice", "sushi")
        await (await box.jetstream()).publish(
            naming.subject(poll.name),
            envelope.encode(),
            headers={"Nats-Msg-Id": key(poll, "alice")},
        )

    run(box, publish_as_the_dead_process())
    with pytest.raises(AlreadyVoted):
        cast(box, poll, "alice")
    assert envelopes(box, poll) == 1


def test_released_after_a_failed_publish_the_voter_can_vote(box: BallotBox) -> None:
    poll = make_poll(box, "deleted")
    put(box, poll, "alice", pending_mark())
    run(box, _delete(box, poll, "alice"))
    seen = cast_watched(box, poll, "alice")
    assert seen[0] is None
    assert pending_now(seen[1]), seen
    assert seen[2:] == [b"queued"]
    assert envelopes(box, poll) == 1


async def _delete(box: BallotBox, poll: Poll, voter: str) -> None:
    await (await bucket(box, poll)).delete(key(poll, voter))


def test_a_publish_that_fails_releases_the_reservation(box: BallotBox) -> None:
    """The stream is not there (an open poll's stream lost): 503, and the voter is not
    locked out: the reservation is freed, and once the stream is back the vote gets in."""
    poll = make_poll(box, "failed")

    async def drop_stream() -> None:
        await (await box.jetstream()).delete_stream(naming.stream(poll.name))

    run(box, drop_stream())
    with pytest.raises(QueueDown):
        cast(box, poll, "alice")
    eventually_value(box, poll, "alice", None)

    async def restore() -> None:
        await topology.provision_queue(await box.jetstream(), poll)

    run(box, restore())
    cast(box, poll, "alice")
    assert envelopes(box, poll) == 1


def test_a_vote_racing_the_close_is_told_so_and_leaves_no_reservation(box: BallotBox) -> None:
    """The ingest still holds the poll as open (its copy is less than a second old) when
    the close switches the stream off the vote subject: 410 (PollClosed), not 503, and
    nothing of the attempt is left."""
    poll = make_poll(box, "closing")
    assert run(box, box.poll("closing")) == poll

    async def close() -> None:
        closed = poll.model_copy(update={"closed": True})
        await topology.provision_queue(await box.jetstream(), closed)

    run(box, close())
    with pytest.raises(PollClosed):
        cast(box, poll, "alice")
    eventually_value(box, poll, "alice", None)
    assert envelopes(box, poll) == 0


def test_detect_mode_reserves_nothing_and_takes_every_vote(box: BallotBox) -> None:
    poll = make_poll(box, "detect", duplicates="detect")
    cast(box, poll, "alice")
    cast(box, poll, "alice")
    assert envelopes(box, poll) == 2

    async def no_bucket() -> bool:
        try:
            await bucket(box, poll)
        except Exception:
            return True
        return False

    assert run(box, no_bucket())
