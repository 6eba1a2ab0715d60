"""Crashes and outages lose no acknowledged vote and store nothing twice."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from privpoll.bus import naming, topology
from privpoll.core import tokens as tokens_module
from privpoll.core.envelope import seal
from privpoll.core.noise import NoiseDraws
from tests.integration.conftest import CHOICES, System, Witness, poll_spec
from tests.integration.test_chaos import VOTES, record_figures


def pending_acks(nats_url: str, poll: str, role: str) -> int:
    async def read() -> int:
        nc = await naming.connect(nats_url, "test")
        try:
            info = await nc.jetstream().consumer_info(naming.stream(poll), role)
            return int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_ballot_sink_killed_mid_batch_loses_and_duplicates_nothing(system: System) -> None:
    count = max(VOTES // 2, 120)
    voters = [f"voter-{i:04d}" for i in range(count)]
    # A minBatch above the votes and a long wait keep envelopes held by the sinks, unacked.
    mixing = {"minBatch": count + 100, "maxWait": "60s"}
    system.create_poll("crash", poll_spec(voters, mixing=mixing))
    witness = Witness(system.nats.url, "crash")
    tokens = system.invitations("crash")
    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(
            pool.map(
                lambda v: system.vote("crash", v, tokens[v], CHOICES[len(v) % 3]).status_code,
                voters,
            )
        )
    assert statuses == {202: count}
    deadline = time.monotonic() + 30
    while pending_acks(system.nats.url, "crash", "ballots") < count:
        assert time.monotonic() < deadline, "the ballot sink never held the batch"
        time.sleep(0.2)
    killed = system.kill_child("sink-ballots")

    deadline = time.monotonic() + 30
    while system.child_pid("sink-ballots") in (killed, None):
        assert time.monotonic() < deadline, "privpoll up did not restart the ballot sink"
        time.sleep(0.2)
    system.close("crash")
    envelopes = witness.envelopes()
    assert len(envelopes) == count
    # Ids differ once the re-mixer rewrote the rows after the close: compare what they hold.
    ballots_sent = {(str(b.id), b.choice) for e in envelopes for b in e.ballots}
    actors, ballots = system.wait_stored("crash", count, len(ballots_sent), timeout=150)
    assert Counter(c for _, c in ballots) == Counter(c for _, c in ballots_sent)
    assert sorted(v for _, v in actors) == voters
    stored = Counter(v for _, v in actors)
    record_figures("ballot sink killed -9 mid-batch", count, set(voters), stored, statuses)


def test_nats_restart_during_voting_keeps_every_acknowledged_vote(system: System) -> None:
    count = max(VOTES, 400)
    voters = [f"voter-{i:04d}" for i in range(count)]
    first, last = count // 4, count * 3 // 4
    system.create_poll("outage", poll_spec(voters))
    witness = Witness(system.nats.url, "outage")
    tokens = system.invitations("outage")
    answers: dict[str, list[tuple[int, str | None]]] = {v: [] for v in voters}

    def cast(voter: str) -> int:
        response = system.vote("outage", voter, tokens[voter], "sushi")
        answers[voter].append((response.status_code, response.headers.get("Retry-After")))
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        before = Counter(pool.map(cast, voters[:first]))
        assert before == {202: first}
        # Kill NATS while votes are in flight, keep voting through the outage, restart it.
        during = pool.map(cast, voters[first:last])
        time.sleep(0.05)
        system.nats.kill()
        outage = Counter(during)
        time.sleep(2)
        system.nats.start()

    assert set(outage) <= {202, 503}, outage
    assert outage[503] > 0, "votes fell into the outage"
    refused = [v for v in voters if any(status == 503 for status, _ in answers[v])]
    assert all(retry == "5" for v in refused for status, retry in answers[v] if status == 503)

    # The system recovers by itself: new voters and refused ones get their votes in. A 409
    # "already voted" tells a refused voter that the vote did reach the stream before the
    # crash (its answer was lost): JetStream dropped the retry as a duplicate.
    deadline = time.monotonic() + 60
    for voter in [*voters[last:], *refused]:
        while (status := cast(voter)) != 202:
            if status == 409 and voter in refused:
                break
            assert time.monotonic() < deadline, f"{voter} could not vote after the outage"
            time.sleep(0.2)

    system.close("outage")
    envelopes = witness.envelopes()
    ballots_sent = {(str(b.id), b.choice) for e in envelopes for b in e.ballots}
    actors, ballots = system.wait_stored("outage", len(envelopes), len(ballots_sent), timeout=150)
    assert Counter(c for _, c in ballots) == Counter(c for _, c in ballots_sent)
    stored = Counter(v for _, v in actors)
    assert set(stored) == set(voters)
    # A vote answered 202 is stored exactly once. A vote answered 503 whose envelope did
    # reach the stream (its ack was lost in the crash) may show up beside the retry: the
    # results then count it as a duplicate, never silently.
    assert all(stored[v] == 1 for v in voters if v not in refused)
    assert all(stored[v] in (1, 2) for v in refused)
    duplicates = sum(n - 1 for n in stored.values())
    assert system.results("outage")["votes"]["duplicates"] == duplicates
    statuses = Counter(status for seen in answers.values() for status, _ in seen)
    acknowledged = {v for v in voters if any(s in (202, 409) for s, _ in answers[v])}
    record_figures("nats-server killed -9 and restarted", count, acknowledged, stored, statuses)


def test_a_vote_orphaned_by_a_crash_is_neither_lost_nor_doubled(system: System) -> None:
    """An ingest worker killed between reserving a voter and publishing leaves a pending
    reservation: the voter's retry takes it over once it is older than any live request can
    be. Killed after publishing (the answer lost), the retry is dropped as a duplicate."""
    voters = ["alice", "bob", "carol"]
    system.create_poll("orphans", poll_spec(voters, mixing={"minBatch": 1, "maxWait": "100ms"}))
    tokens = system.invitations("orphans")
    uid = uuid.UUID(system.poll_uid("orphans"))
    long_ago = b"pending %.3f" % (time.time() - 3600)

    async def leave(voter: str, value: bytes, published: bool) -> None:
        nc = await naming.connect(system.nats.url, "test")
        try:
            js = nc.jetstream()
            key = tokens_module.reservation_key(uid, voter)
            bucket = await js.key_value(naming.voters_bucket("orphans"))
            await bucket.put(key, value)
            if published:  # what the dead worker managed to publish
                poll = await topology.read_poll(await topology.registry_bucket(js), "orphans")
                assert poll is not None
                envelope = seal(NoiseDraws(poll.rules), voter, "tacos")
                await js.publish(
                    naming.subject("orphans"),
                    envelope.encode(),
                    headers={"Nats-Msg-Id": key},
                )
        finally:
            await nc.close()

    # Died before publishing, long ago: the retry takes the reservation over.
    asyncio.run(leave("alice", long_ago, published=False))
    assert system.vote("orphans", "alice", tokens["alice"], "pizza").status_code == 202
    # Died after publishing: the vote is in; the retry is told so and stores nothing.
    asyncio.run(leave("bob", long_ago, published=True))
    again = system.vote("orphans", "bob", tokens["bob"], "sushi")
    assert again.status_code == 409, again.text
    # Pending a moment ago: maybe still in flight, so the retry waits, then asks for patience.
    asyncio.run(leave("carol", b"pending %.3f" % time.time(), published=False))
    busy = system.vote("orphans", "carol", tokens["carol"], "pizza")
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "5"
    system.close("orphans")
    deadline = time.monotonic() + 60
    while len(system.stored("orphans")[0]) < 2:
        assert time.monotonic() < deadline, system.output()
        time.sleep(0.3)
    assert sorted(v for _, v in system.stored("orphans")[0]) == ["alice", "bob"]


def test_votes_racing_a_close_are_taken_or_refused_never_a_500(system: System) -> None:
    """Closing a poll switches its stream off the vote subject: a vote published in that
    moment finds no stream, and is told the poll closed (it was: 410), not a 500."""
    voters = [f"voter-{i:04d}" for i in range(1500)]
    system.create_poll("racing", poll_spec(voters, duplicates="detect"))
    tokens = system.invitations("racing")

    answered = itertools.count(1)
    some_answered = threading.Event()

    def cast(voter: str) -> int:
        with httpx.Client(base_url=system.url, timeout=30) as http:
            answer = http.post(
                "/api/v1/polls/racing/votes",
                json={"voter": voter, "token": tokens[voter], "choice": "pizza"},
            )
        if next(answered) == len(voters) // 5:
            some_answered.set()
        return answer.status_code

    with ThreadPoolExecutor(16) as pool:
        answers = pool.map(cast, voters)
        # Close while votes still come, however fast this machine takes them.
        assert some_answered.wait(60), "the first fifth of the votes was never answered"
        system.close("racing")
        statuses = Counter(answers)
    assert set(statuses) == {202, 410}, statuses
    deadline = time.monotonic() + 60
    while len(system.stored("racing")[0]) < statuses[202]:
        assert time.monotonic() < deadline, system.output()
        time.sleep(0.3)
    assert len(system.stored("racing")[0]) == statuses[202], "accepted: stored; refused: not"
